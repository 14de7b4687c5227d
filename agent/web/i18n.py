"""Labels of the operators' pages in Thai and English (?lang=th|en)."""

from __future__ import annotations

LANGS = ("th", "en")

LABELS: dict[str, tuple[str, str]] = {
    # key: (Thai, English)
    "title": ("AirWatt ผู้ดูแลระบบ", "AirWatt operators"),
    "fleet": ("อุปกรณ์", "Fleet"),
    "device": ("อุปกรณ์", "Device"),
    "sync": ("การซิงค์ข้อมูล", "Sync"),
    "carbon": ("คาร์บอนฟุตพริ้นท์", "Carbon"),
    "air": ("คุณภาพอากาศ", "Air"),
    "site": ("สถานที่", "Site"),
    "all_sites": ("ทุกสถานที่", "All sites"),
    "name": ("ชื่อ", "Name"),
    "state": ("สถานะ", "State"),
    "online": ("ออนไลน์", "online"),
    "late": ("ล่าช้า", "late"),
    "offline": ("ออฟไลน์", "offline"),
    "never": ("ยังไม่เคยส่งข้อมูล", "never seen"),
    "state_note": ("ออนไลน์: ส่งข้อมูลล่าสุดไม่เกิน %d รอบการส่ง, ล่าช้า: ไม่เกิน %d รอบ, ออฟไลน์: นานกว่านั้น "
                   "(รอบการส่งของแต่ละบอร์ดมาจากค่าที่ใช้ตอนแฟลช)",
                   "online: last upload within %d upload intervals, late: within %d, offline: longer "
                   "(each board's interval is the one it was flashed with)"),
    "no_location": ("อุปกรณ์ที่ยังไม่มีพิกัดที่ตั้ง", "Devices without a location"),
    "no_location_note": ("ข้อมูลของอุปกรณ์เหล่านี้รออยู่ในเครื่อง ไม่ส่งไปยังแพลตฟอร์ม NGSI-LD จนกว่าจะกำหนดพิกัด "
                         "(ละติจูด ลองจิจูด) ให้ด้วยคำสั่งนี้",
                         "Their readings wait in the store and are not sent to an NGSI-LD platform until the "
                         "device has a location (latitude, longitude). Set it with this command"),
    "waiting": ("ข้อมูลที่รอส่ง", "readings waiting"),
    "last_seen": ("ส่งข้อมูลล่าสุด", "Last seen"),
    "firmware": ("เฟิร์มแวร์", "Firmware"),
    "rssi": ("สัญญาณ Wi-Fi (dBm)", "RSSI (dBm)"),
    "free_heap": ("หน่วยความจำว่าง (ไบต์)", "Free heap (bytes)"),
    "buffer_depth": ("ข้อมูลค้างในบอร์ด", "Buffer depth"),
    "dropped": ("ข้อมูลที่ถูกทิ้ง", "Dropped readings"),
    "sensor_errors": ("ข้อผิดพลาดเซนเซอร์", "Sensor errors"),
    "time_sync": ("การตั้งเวลา", "Time sync"),
    "readings": ("จำนวนข้อมูล", "Readings"),
    "ago": ("ที่แล้ว", "ago"),
    "range": ("ช่วงเวลา", "Range"),
    "show": ("แสดง", "Show"),
    "pm25_plot": ("ฝุ่น PM2.5 (µg/m³) บนแถบสีดัชนีคุณภาพอากาศ", "PM2.5 (µg/m³) on Thai AQI colour bands"),
    "co2_plot": ("คาร์บอนไดออกไซด์ (ppm)", "CO2 (ppm)"),
    "temp_plot": ("อุณหภูมิ (°C)", "Temperature (°C)"),
    "hum_plot": ("ความชื้นสัมพัทธ์ (%RH)", "Relative humidity (%RH)"),
    "power_plot": ("กำลังไฟฟ้า (W)", "Power (W)"),
    "kwh_plot": ("พลังงานไฟฟ้ารายวัน (kWh)", "Daily energy (kWh)"),
    "flagged": ("ข้อมูลที่ถูกทำเครื่องหมาย", "flagged reading"),
    "no_data": ("ไม่มีข้อมูลในช่วงนี้", "no data in this range"),
    "unknown_device": ("ไม่พบอุปกรณ์", "unknown device"),
    "pending": ("รอส่ง", "Pending"),
    "synced": ("ส่งแล้ว", "Synced"),
    "lag": ("ความล่าช้า", "Lag"),
    "last_sync_ok": ("ซิงค์สำเร็จล่าสุด", "Last successful sync"),
    "sync_log": ("บันทึกการซิงค์", "Sync log"),
    "worker": ("ตัวส่งข้อมูล", "Sync worker"),
    "next_attempt": ("ครั้งต่อไป", "Next attempt"),
    "failures": ("ล้มเหลวติดกัน", "Failures in a row"),
    "held": ("ข้อมูลที่แพลตฟอร์มปฏิเสธ (พักไว้)", "Readings held back (refused by the platform)"),
    "disabled": ("ไม่ได้ตั้งค่าแพลตฟอร์ม", "no platform configured"),
    "last_errors": ("ข้อผิดพลาดล่าสุดจากแพลตฟอร์ม", "Platform's last errors"),
    "at": ("เวลา", "At"),
    "status": ("รหัสสถานะ", "Status"),
    "count": ("จำนวน", "Count"),
    "detail": ("รายละเอียด", "Detail"),
    "retry_now": ("ลองส่งใหม่ทันที", "Retry now"),
    "operator_token": ("รหัสผู้ดูแล", "Operator token"),
    "token_where": ("รหัสผู้ดูแลอยู่ใน operator_token ของ airwatt.toml หรือในไฟล์ %s",
                    "The operator token is operator_token in airwatt.toml, or the file %s"),
    "retry_requested": ("ส่งคำขอซิงค์ใหม่แล้ว", "Retry requested"),
    "last_retry": ("คำขอซิงค์ใหม่ล่าสุด", "Last retry request"),
    "none": ("ไม่มี", "none"),
    "day": ("วัน", "Day"),
    "month": ("เดือน", "Month"),
    "kwh": ("พลังงาน (kWh)", "Energy (kWh)"),
    "kgco2e": ("การปล่อยก๊าซเรือนกระจก (kgCO2e)", "Emissions (kgCO2e)"),
    "factor": ("ค่าสัมประสิทธิ์การปล่อย (kgCO2e/kWh)", "Factor (kgCO2e/kWh)"),
    "factor_year": ("ปีของค่าสัมประสิทธิ์", "Factor year"),
    "factor_note": ("ค่าการปล่อยก๊าซเรือนกระจกของระบบไฟฟ้า (TGO, ขอบเขตที่ 2)",
                    "Grid emission factor (TGO, scope 2)"),
    "partial": ("ไม่ครบเดือน", "partial"),
    "days": ("วัน", "days"),
    "aqi": ("ดัชนีคุณภาพอากาศ (AQI)", "Thai AQI"),
    "pm25_24h": ("PM2.5 เฉลี่ย 24 ชม. (µg/m³)", "PM2.5 24-h mean (µg/m³)"),
    "pm10_24h": ("PM10 เฉลี่ย 24 ชม. (µg/m³)", "PM10 24-h mean (µg/m³)"),
    "hours": ("ชั่วโมงที่มีข้อมูล", "Hours with data"),
    "provisional": ("ข้อมูลไม่ครบ 18 ชม.", "under 18 h of data"),
    "dominant": ("สารมลพิษหลัก", "Main pollutant"),
    "level": ("ระดับ", "Level"),
    "legend": ("ความหมายของสี", "Colour bands"),
    "lang_other": ("English", "ภาษาไทย"),
    "updated": ("ปรับปรุงเมื่อ", "Updated"),
    "guide_1000": ("1000 ppm ควรระบายอากาศ", "1000 ppm: ventilate"),
    "guide_1500": ("1500 ppm อากาศไม่ถ่ายเท", "1500 ppm: poor ventilation"),
    "above_scale": ("เกินสเกล", "above scale"),
    "energy_note": ("คำนวณจากมิเตอร์สะสม: ตัวนับรีเซ็ตหรือวนรอบไม่ทำให้ค่าติดลบหรือนับซ้ำ",
                    "From cumulative meter counters: resets and rollovers never give negative or doubled kWh"),
}


def lang_of(value: str | None, default: str = "th") -> str:
    return value if value in LANGS else default


def label(lang: str, key: str) -> str:
    th, en = LABELS[key]
    return th if lang == "th" else en
