"""The local factory: a Prefect server, work pools, limits, automations, deployments and workers."""
