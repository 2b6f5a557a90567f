"""Data shipped with Spillover: the example configs, the JSON schema and the bundled GPU price catalog."""
