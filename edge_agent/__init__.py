"""edge-agent: streaming anomaly detection for industrial plant gateways."""

__version__ = "0.1.0"
