"""Python 3 shims for the ported Autobahn|Testsuite; py3port.py copies this file into the package as _py3.py.

The testsuite is Python 2 code: its cases build payloads as byte strings. After 2to3 those literals are
str objects whose code points are the intended octets ("\\xce\\xba" is two octets), so here every str is
read as latin-1: payloads leave as exactly those octets, and received bytes compare equal to them.
"""
import binascii as _binascii

from autobahn.websocket.utf8validator import Utf8Validator as _Utf8Validator


def octets(value):
    """A Python 2 byte string (str of code points 0-255, bytes or bytearray) as bytes; None stays None."""
    if isinstance(value, str):
        return value.encode("latin-1")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def as_py2(value):
    """bytes as latin-1 str, also inside lists, tuples and dicts: what a Python 2 comparison saw."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("latin-1")
    if isinstance(value, (list, tuple)):
        return type(value)(as_py2(v) for v in value)
    if isinstance(value, dict):
        return {as_py2(k): as_py2(v) for k, v in value.items()}
    return value


def for_json(value):
    """bytes as UTF-8 text (invalid sequences replaced), as Python 2's json module wrote them."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return [for_json(v) for v in value]
    if isinstance(value, dict):
        return {for_json(k): for_json(v) for k, v in value.items()}
    return value


def show(value):
    """Octets as readable text, for case descriptions."""
    return octets(value).decode("utf-8", errors="replace")


class _Binascii:
    """binascii whose hex functions take Python 2 byte strings and return str, as they did in Python 2."""

    def __getattr__(self, name):
        return getattr(_binascii, name)

    @staticmethod
    def b2a_hex(data):
        return _binascii.b2a_hex(octets(data)).decode("ascii")

    @staticmethod
    def a2b_hex(data):
        return _binascii.a2b_hex(octets(data)).decode("latin-1")

    hexlify, unhexlify = b2a_hex, a2b_hex


binascii = _Binascii()


class Utf8Validator(_Utf8Validator):
    """Autobahn's incremental UTF-8 validator, taking Python 2 byte strings too."""

    def validate(self, data):
        return super().validate(octets(data))


class BytesPayloads:
    """Put before Autobahn's protocol class (py3port makes it the base of FuzzingProtocol): whatever a case
    sends leaves as bytes, which is all that Autobahn|Python accepts on Python 3."""

    def sendFrame(self, opcode, payload=b"", *args, **kwargs):
        return super().sendFrame(opcode, octets(payload), *args, **kwargs)

    def sendMessage(self, payload, *args, **kwargs):
        return super().sendMessage(octets(payload), *args, **kwargs)

    def sendMessageFrameData(self, payload, *args, **kwargs):
        return super().sendMessageFrameData(octets(payload), *args, **kwargs)

    def sendPing(self, payload=None):
        return super().sendPing(octets(payload))

    def sendPong(self, payload=None):
        return super().sendPong(octets(payload))

    def sendCloseFrame(self, code=None, reasonUtf8=None, isReply=False):
        return super().sendCloseFrame(code, octets(reasonUtf8), isReply)
