"""The admin endpoint of ``courier run --admin``: health checks, the web console, and a
mounting point for more (``/metrics``).

:mod:`engine.admin.options` declares the command-line options and the operators' secrets,
:mod:`engine.admin.auth` the sessions and their checks, :mod:`engine.admin.server` the HTTP
server and its pre-auth limits, :mod:`engine.admin.site` the routing, :mod:`engine.admin.health`
``/healthz`` and ``/readyz``, :mod:`engine.admin.console` the pages and their actions.
"""
