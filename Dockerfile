# syntax=docker/dockerfile:1
# One image for every function; the deployment picks one at run time:
#   FUNCTION_SOURCE=functions/<name>/main.py   (FUNCTION_TARGET is `handle` everywhere)
# It serves HTTP on $PORT (8080) as functions-framework does: gunicorn with THREADS threads for
# Flask functions, a uvicorn worker for the ASGI (`functions_framework.aio`) ones.
#   make build && docker run -e FUNCTION_SOURCE=functions/prompts/main.py \
#     -e MONGODB_URI=mongodb://... -p 8080:8080 better-assistant

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build: the locked runtime dependencies and the `shared` package into /app/.venv, no dev group.
FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first, so a code change rebuilds only the layers below.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY README.md ./
COPY shared ./shared
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable
COPY functions ./functions
# Bytecode compiled now, not at each cold start (and the image is read-only to the app user).
RUN /app/.venv/bin/python -m compileall -q --invalidation-mode unchecked-hash functions

# Run: the interpreter, the virtual environment and the function sources; nothing else.
FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/functions /app/functions
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080 \
    FUNCTION_TARGET=handle
USER 10001
EXPOSE 8080
CMD ["functions-framework"]
