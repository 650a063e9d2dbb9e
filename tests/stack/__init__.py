"""Static checks of the bundled observability stack (compose.yaml and the component configs)."""
