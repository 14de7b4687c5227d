"""Emulated parts of the world outside AirWatt: ESP32 boards with their sensors, and the city platform."""
