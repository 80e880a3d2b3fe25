"""Deleting what other domains' records depend on: cascades, and refusals while in use. One
module per thing deleted, so each function imports only what its own deletes reach."""
