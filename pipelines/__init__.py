"""The hhpulse Kubeflow pipeline, its compiled YAML, and the KFP API client adapters."""
