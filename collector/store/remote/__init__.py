"""Remote history: a Prometheus-compatible TSDB (VictoriaMetrics, Prometheus, Mimir, Thanos receive) as the
shared history of one or many collectors, written by remote write, read by PromQL (docs/scale-out.md).

* wire.py     the remote-write protobuf, hand-encoded, raw-snappy compressed
* samples.py  capacity frames -> `capacity_resource_*` series (the /metrics names and labels)
* client.py   HTTP: auth and TLS from files, retries on 5xx/429, the bounded retry queue
* promql.py   PromReader: pool_series / host_series / last_timestamp from /api/v1/query_range
* stats.py    self-metrics (`capacityd_remote_storage_*`) as the `remote_history_stats` frame
* backend.py  RemoteHistory and `open_backend`, the factory the daemon calls
"""
