-- Runs once, when the postgres volume is first initialised: ragline's shared state (record store, embedding
-- cache, namespace locks) gets its own database beside the Prefect server's.
CREATE DATABASE ragline;
