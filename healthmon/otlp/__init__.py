"""The OTLP/HTTP log receiver: services push their logs to `POST /v1/logs` as
OpenTelemetry's `ExportLogsServiceRequest` (protobuf or JSON, gzip or not) with an
ingest key of a source (`healthmon.ingest_keys`).

`decoding` turns a body into `healthmon.ingest.LogRecord`s, `answers` encodes the
answers OTLP expects, `flood` bounds how fast one source may push, and `receiver` is
the plain ASGI application `controlplane.asgi_routes` serves at `/v1/logs`.
"""
