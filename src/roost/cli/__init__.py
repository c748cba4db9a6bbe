"""The ``roost`` command: ``up`` runs a node in the foreground; every other command is a thin
client of the control-plane API (it finds a local ``roost up`` through its data dir's
``api.json`` and ``token``) and uses the API's own request/response types (``api.schema``)."""
