"""``conveyor server``: the HTTP front door (webhooks now; the API and UI next) and the
trigger runtime, on the embedded engine or in front of the distributed one."""
