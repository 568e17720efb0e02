from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EchoRequest(_message.Message):
    __slots__ = ("message", "size")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    message: str
    size: int
    def __init__(self, message: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class EchoReply(_message.Message):
    __slots__ = ("message", "payload", "version")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    message: str
    payload: str
    version: str
    def __init__(self, message: _Optional[str] = ..., payload: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("chunks", "size", "ttft_ms", "tpot_ms")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_MS_FIELD_NUMBER: _ClassVar[int]
    chunks: int
    size: int
    ttft_ms: int
    tpot_ms: int
    def __init__(self, chunks: _Optional[int] = ..., size: _Optional[int] = ..., ttft_ms: _Optional[int] = ..., tpot_ms: _Optional[int] = ...) -> None: ...

class StreamChunk(_message.Message):
    __slots__ = ("index", "payload")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    index: int
    payload: str
    def __init__(self, index: _Optional[int] = ..., payload: _Optional[str] = ...) -> None: ...
