"""The edge agent: polls devices over Modbus, SNMP and BACnet and publishes over MQTT."""
