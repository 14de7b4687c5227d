"""A minimal Django project hosting django-ogc-sensorthings (a real SensorThings API v1.1 server) for the tests.

Run (tests/sync/sta_server.py does this): DJANGO_SETTINGS_MODULE=sensorthings_server.settings with tests/ on
PYTHONPATH, STA_DB=<sqlite file>, STA_URL=http://127.0.0.1:<port>/sensorthings; `django-admin migrate`, then
`django-admin runserver --noreload 127.0.0.1:<port>`.
"""
