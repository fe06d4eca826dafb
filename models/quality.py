"""Per-point quality: good, or the reason a value is missing."""

from __future__ import annotations

from enum import StrEnum


class Quality(StrEnum):
    """Why a point has, or has no, value. Every point in every batch carries one."""

    GOOD = "good"
    TIMEOUT = "timeout"  # the device did not answer within the timeout
    COMM_ERROR = "comm_error"  # connection refused, reset, or a broken frame
    ILLEGAL_ADDRESS = "illegal_address"  # Modbus exception 2 for this point's registers
    DEVICE_EXCEPTION = "device_exception"  # another Modbus exception or protocol error answer
    NO_SUCH_OBJECT = "no_such_object"  # SNMP noSuchObject / BACnet unknown-object
    NO_SUCH_INSTANCE = "no_such_instance"  # SNMP noSuchInstance
    END_OF_MIB = "end_of_mib"  # SNMP endOfMibView
    NOT_AVAILABLE = "not_available"  # the device says "no reading" (e.g. 0xFFFF sentinel)
    DECODE_ERROR = "decode_error"  # the answer could not be decoded as the model says
    NOT_A_NUMBER = "not_a_number"  # a float that was NaN
    INFINITE = "infinite"  # a float that was +/- infinity
    UNKNOWN_ENUM = "unknown_enum"  # an enumeration value the model does not name
    FAULT = "fault"  # BACnet status-flags fault, or reliability other than no-fault
    OUT_OF_SERVICE = "out_of_service"  # BACnet out-of-service
    OVERRIDDEN = "overridden"  # BACnet overridden status flag
    UNSUPPORTED = "unsupported"  # the device does not support the request
    ERROR = "error"  # anything else; the batch's event log says what

    @property
    def good(self) -> bool:
        """Whether the value can be trusted."""
        return self is Quality.GOOD
