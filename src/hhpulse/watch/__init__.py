"""Watching the served model: the prediction log, the sink that writes it, and the monitor.

``served`` (the log's layout and writer), ``logsink`` (KServe logger CloudEvents into the log)
and ``logsink_http`` (``hhpulse logsink``'s HTTP server), ``monitor`` (volume, cohort mix, input
drift, live demand accuracy against resolved labels).

May import: :mod:`hhpulse.model`, :mod:`hhpulse.data`, :mod:`hhpulse.hh` and :mod:`hhpulse.config`.
"""
