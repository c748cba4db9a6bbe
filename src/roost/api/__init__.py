"""The control plane: an HTTP + JSON API (``app``; bearer token, ``auth``) over operations
(``service``: deploy, scale, instance actions) that write desired state into the catalog;
``scheduler`` decides placement (pure). Request/response types (``schema``) are shared with the CLI.
"""
