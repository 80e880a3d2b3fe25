"""What a team does with projects."""

from shared.caching import ExpiringCache
from shared.errors import not_found
from shared.metering.models import UsageParams, UsageReport
from shared.metering.service import Metering
from shared.pagination import Page
from shared.projects.models import Project, ProjectCreate, ProjectListParams, ProjectUpdate
from shared.projects.repository import ProjectRepository
from shared.settings import get_settings

# Every call to DeepSeek reads its project's limits: a replica reads a project at most this often
# for that, so a change of limits reaches every replica within it (this one's at once).
RECENT_PROJECT_S = 5.0
_recent: ExpiringCache[tuple[str, str], Project] = ExpiringCache(RECENT_PROJECT_S)


class ProjectService:
    def __init__(self) -> None:
        self.projects = ProjectRepository()

    def create(self, data: ProjectCreate) -> Project:
        return self.projects.create(data)

    def search(self, params: ProjectListParams, within: list[str] | None) -> Page[Project]:
        """The `within` projects (None: every project), newest first."""
        return Page.of(self.projects.search(params, within), params)

    def get(self, project_id: str) -> Project:
        """One project; 404 when it does not exist."""
        project = self.projects.get(project_id)
        if project is None:
            raise not_found("project", project_id)
        return project

    def get_recent(self, project_id: str) -> Project:
        """One project as read at most RECENT_PROJECT_S ago; 404 when it does not exist."""
        return _recent.get((get_settings().mongodb_db, project_id), lambda: self.get(project_id))

    def update(self, project_id: str, changes: ProjectUpdate) -> Project:
        _recent.forget((get_settings().mongodb_db, project_id))
        project = self.projects.update(project_id, changes)
        if project is None:
            raise not_found("project", project_id)
        return project

    def usage(self, project_id: str, params: UsageParams) -> UsageReport:
        """What the project's calls cost over a range of UTC days, and its month's budget."""
        project = self.get(project_id)
        return Metering().report(project.id, project.limits, params)
