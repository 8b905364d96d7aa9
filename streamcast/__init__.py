"""streamcast: real-time LSTM forecasting for Kafka streams."""

__version__ = "0.1.0"
