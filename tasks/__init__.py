"""Pipeline stages: plain functions plus one thin Prefect task wrapper per stage."""
