# AirWatt's wire protocol. fields.py, wire.py and check.py run on MicroPython and CPython alike;
# models.py (pydantic) and schema.py are CPython-only.
