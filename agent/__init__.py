"""The AirWatt site agent: ingest from boards, durable store, sync to the city platform, operators' pages."""
