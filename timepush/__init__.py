"""The optional parts of ``app.py``, one module each; ``app.py`` uses them, none imports it.

- ``hosts``: the Host check (DNS rebinding) and the Origin check;
- ``signed_ids``: Ids handed out in a signed cookie (``--cookie_secret``);
- ``push``: ``POST /push``, and this process as a node of a cluster (``--redis``);
- ``cluster``: the cluster engine on Redis, which imports nothing of the project;
- ``processes``: several worker processes on one port (``--processes``);
- ``acceptor``: an accept loop that survives running out of file descriptors;
- ``loglimit``: a log that stays bounded whatever clients do;
- ``clock``: ``GET /clock``, the zone of the pushed time;
- ``counters``: what the server counts, and ``GET /stats``;
- ``fastpath``: the tick's loop, below Tornado's public API, checked at start-up;
- ``command_line``: the options as the docs spell them, one line for a mistake.
"""
