# Makes the firmware files package data of `airwatt.firmware`; not copied to boards.
