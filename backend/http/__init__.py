"""The HTTP boundary with Label Studio, both ways: the Flask app factory and its routes (protocol), payload
validation, the thin ML-backend adapter, prediction rendering, and the label-studio-sdk client. May import
backend.background, labels, queue, store and core; nothing imports it except admin and the WSGI entry."""
