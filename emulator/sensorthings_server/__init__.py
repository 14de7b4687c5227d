"""A minimal Django project hosting django-ogc-sensorthings (a real SensorThings API v1.1 server, a dev
dependency) for the tests and `airwatt bench sync --kind sensorthings`: emulator/real_servers.py runs it with
DJANGO_SETTINGS_MODULE=airwatt.emulator.sensorthings_server.settings, STA_DB=<sqlite file> and
STA_URL=http://127.0.0.1:<port>/sensorthings (`django migrate`, then `django runserver --noreload`).
"""
