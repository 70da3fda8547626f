"""trainpipe: raw tabular data to a trained, evaluated, versioned XGBoost model, on Prefect."""

__version__ = "0.1.0"
