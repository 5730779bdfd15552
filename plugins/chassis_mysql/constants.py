"""Numbers of the MySQL/MariaDB client/server protocol, named as the C headers name them.

Names drop the ``CLIENT_``/``COM_``/``SERVER_STATUS_``/``MYSQL_TYPE_`` prefixes because
the enum class already says it: ``Capability.PROTOCOL_41`` is ``CLIENT_PROTOCOL_41``.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

#: Largest payload of one physical packet; a logical payload of this size or more is
#: split into 0xFFFFFF-byte chunks (plus an empty packet when it divides evenly).
MAX_PAYLOAD = 0xFFFFFF

#: Length of the packet header: 3 bytes payload length, 1 byte sequence id.
HEADER_SIZE = 4


class Capability(IntFlag):
    """Capability flags (``CLIENT_*``) exchanged in the handshake.

    Bits 0..31 travel in the classic 4-byte (2 + 2 split in the server's handshake)
    field. Bits 32..63 are MariaDB's extended capabilities: they travel in the last 4
    bytes of the handshake's filler and only when the ``LONG_PASSWORD`` bit (which
    MariaDB calls ``CLIENT_MYSQL``) is *unset* in the server's, respectively the
    client's, classic capabilities. A MariaDB server never sets that bit; MySQL
    servers and clients always do.
    """

    LONG_PASSWORD = 1 << 0
    FOUND_ROWS = 1 << 1
    LONG_FLAG = 1 << 2
    CONNECT_WITH_DB = 1 << 3
    NO_SCHEMA = 1 << 4
    COMPRESS = 1 << 5
    ODBC = 1 << 6
    LOCAL_FILES = 1 << 7
    IGNORE_SPACE = 1 << 8
    PROTOCOL_41 = 1 << 9
    INTERACTIVE = 1 << 10
    SSL = 1 << 11
    IGNORE_SIGPIPE = 1 << 12
    TRANSACTIONS = 1 << 13
    RESERVED = 1 << 14
    SECURE_CONNECTION = 1 << 15
    MULTI_STATEMENTS = 1 << 16
    MULTI_RESULTS = 1 << 17
    PS_MULTI_RESULTS = 1 << 18
    PLUGIN_AUTH = 1 << 19
    CONNECT_ATTRS = 1 << 20
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    SESSION_TRACK = 1 << 23
    DEPRECATE_EOF = 1 << 24
    OPTIONAL_RESULTSET_METADATA = 1 << 25
    ZSTD_COMPRESSION_ALGORITHM = 1 << 26
    QUERY_ATTRIBUTES = 1 << 27
    MULTI_FACTOR_AUTHENTICATION = 1 << 28
    CAPABILITY_EXTENSION = 1 << 29
    SSL_VERIFY_SERVER_CERT = 1 << 30
    REMEMBER_OPTIONS = 1 << 31
    # MariaDB extended capabilities (mariadb_com.h), shifted into bits 32..63.
    MARIADB_CLIENT_PROGRESS = 1 << 32
    MARIADB_CLIENT_COM_MULTI = 1 << 33
    MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 34
    MARIADB_CLIENT_EXTENDED_METADATA = 1 << 35
    MARIADB_CLIENT_CACHE_METADATA = 1 << 36
    MARIADB_CLIENT_BULK_UNIT_RESULTS = 1 << 37


#: MariaDB's name for bit 0: set by MySQL peers, unset by MariaDB ones; when unset the
#: filler carries the extended capabilities.
CLIENT_MYSQL = Capability.LONG_PASSWORD

#: Mask of the classic 32 bits and of MariaDB's extended bits (already shifted).
CLASSIC_CAPABILITIES_MASK = 0xFFFFFFFF
MARIADB_EXTENDED_CAPABILITIES_MASK = 0xFFFFFFFF << 32


class Command(IntEnum):
    """First byte of every client command packet (``COM_*``)."""

    SLEEP = 0x00
    QUIT = 0x01
    INIT_DB = 0x02
    QUERY = 0x03
    FIELD_LIST = 0x04
    CREATE_DB = 0x05
    DROP_DB = 0x06
    REFRESH = 0x07
    SHUTDOWN = 0x08
    STATISTICS = 0x09
    PROCESS_INFO = 0x0A
    CONNECT = 0x0B
    PROCESS_KILL = 0x0C
    DEBUG = 0x0D
    PING = 0x0E
    TIME = 0x0F
    DELAYED_INSERT = 0x10
    CHANGE_USER = 0x11
    BINLOG_DUMP = 0x12
    TABLE_DUMP = 0x13
    CONNECT_OUT = 0x14
    REGISTER_SLAVE = 0x15
    STMT_PREPARE = 0x16
    STMT_EXECUTE = 0x17
    STMT_SEND_LONG_DATA = 0x18
    STMT_CLOSE = 0x19
    STMT_RESET = 0x1A
    SET_OPTION = 0x1B
    STMT_FETCH = 0x1C
    DAEMON = 0x1D
    BINLOG_DUMP_GTID = 0x1E
    RESET_CONNECTION = 0x1F
    CLONE = 0x20
    SUBSCRIBE_GROUP_REPLICATION_STREAM = 0x21
    # MariaDB-only commands.
    STMT_BULK_EXECUTE = 0xFA
    MULTI = 0xFE


class ServerStatus(IntFlag):
    """Server status flags (``SERVER_STATUS_*``/``SERVER_*``) in OK and EOF packets."""

    IN_TRANS = 1 << 0
    AUTOCOMMIT = 1 << 1
    MORE_RESULTS = 1 << 2  # unused since 4.1, kept so every bit has a name
    MORE_RESULTS_EXISTS = 1 << 3
    NO_GOOD_INDEX_USED = 1 << 4
    NO_INDEX_USED = 1 << 5
    CURSOR_EXISTS = 1 << 6
    LAST_ROW_SENT = 1 << 7
    DB_DROPPED = 1 << 8
    NO_BACKSLASH_ESCAPES = 1 << 9
    METADATA_CHANGED = 1 << 10
    QUERY_WAS_SLOW = 1 << 11
    PS_OUT_PARAMS = 1 << 12
    IN_TRANS_READONLY = 1 << 13
    SESSION_STATE_CHANGED = 1 << 14
    ANSI_QUOTES = 1 << 15  # MariaDB


class FieldType(IntEnum):
    """Column and parameter types (``enum_field_types``, ``MYSQL_TYPE_*``)."""

    DECIMAL = 0x00
    TINY = 0x01
    SHORT = 0x02
    LONG = 0x03
    FLOAT = 0x04
    DOUBLE = 0x05
    NULL = 0x06
    TIMESTAMP = 0x07
    LONGLONG = 0x08
    INT24 = 0x09
    DATE = 0x0A
    TIME = 0x0B
    DATETIME = 0x0C
    YEAR = 0x0D
    NEWDATE = 0x0E
    VARCHAR = 0x0F
    BIT = 0x10
    TIMESTAMP2 = 0x11
    DATETIME2 = 0x12
    TIME2 = 0x13
    TYPED_ARRAY = 0x14
    VECTOR = 0xF2
    INVALID = 0xF3
    BOOL = 0xF4
    JSON = 0xF5
    NEWDECIMAL = 0xF6
    ENUM = 0xF7
    SET = 0xF8
    TINY_BLOB = 0xF9
    MEDIUM_BLOB = 0xFA
    LONG_BLOB = 0xFB
    BLOB = 0xFC
    VAR_STRING = 0xFD
    STRING = 0xFE
    GEOMETRY = 0xFF


class ColumnFlag(IntFlag):
    """Column definition flags (``*_FLAG`` in mysql_com.h)."""

    NOT_NULL = 1 << 0
    PRI_KEY = 1 << 1
    UNIQUE_KEY = 1 << 2
    MULTIPLE_KEY = 1 << 3
    BLOB = 1 << 4
    UNSIGNED = 1 << 5
    ZEROFILL = 1 << 6
    BINARY = 1 << 7
    ENUM = 1 << 8
    AUTO_INCREMENT = 1 << 9
    TIMESTAMP = 1 << 10
    SET = 1 << 11
    NO_DEFAULT_VALUE = 1 << 12
    ON_UPDATE_NOW = 1 << 13
    PART_KEY = 1 << 14
    NUM = 1 << 15


class SessionStateType(IntEnum):
    """Entry types of the session-state-change block in OK packets (SESSION_TRACK)."""

    SYSTEM_VARIABLES = 0
    SCHEMA = 1
    STATE_CHANGE = 2
    GTIDS = 3
    TRANSACTION_CHARACTERISTICS = 4
    TRANSACTION_STATE = 5


class CursorType(IntFlag):
    """Flags byte of COM_STMT_EXECUTE (``CURSOR_TYPE_*``, plus MySQL 8's PARAMETER_COUNT)."""

    NO_CURSOR = 0
    READ_ONLY = 1
    FOR_UPDATE = 2
    SCROLLABLE = 4
    PARAMETER_COUNT_AVAILABLE = 8


class SetOption(IntEnum):
    """Argument of COM_SET_OPTION."""

    MULTI_STATEMENTS_ON = 0
    MULTI_STATEMENTS_OFF = 1


# Header bytes of server responses.
OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB
AUTH_MORE_DATA_HEADER = 0x01
AUTH_SWITCH_HEADER = 0xFE

#: Default character set id of many clients (utf8mb4_general_ci).
UTF8MB4_GENERAL_CI = 45
#: The ``binary`` collation id, used in column definitions of non-text columns.
BINARY_CHARSET = 63


class ErrorCode(IntEnum):
    """Server error numbers the proxy and admin send themselves (``ER_*`` of mysqld_error.h)."""

    CON_COUNT_ERROR = 1040
    HANDSHAKE_ERROR = 1043
    DBACCESS_DENIED_ERROR = 1044
    ACCESS_DENIED_ERROR = 1045
    UNKNOWN_COM_ERROR = 1047
    NO_SUCH_TABLE = 1146
    UNKNOWN_ERROR = 1105
    NET_PACKET_TOO_LARGE = 1153
    NET_READ_ERROR = 1158
    NET_READ_INTERRUPTED = 1159
    NOT_SUPPORTED_AUTH_MODE = 1251
    PARSE_ERROR = 1064
    BAD_FIELD_ERROR = 1054
    NO_SUCH_THREAD = 1094
    SPECIFIC_ACCESS_DENIED_ERROR = 1227
    QUERY_INTERRUPTED = 1317


class ClientError(IntEnum):
    """Client-library error numbers (``CR_*`` of errmsg.h) the proxy uses where the
    failure is on its own side of a connection."""

    UNKNOWN_ERROR = 2000
    CONNECTION_ERROR = 2002
    CONN_HOST_ERROR = 2003
    SERVER_GONE_ERROR = 2006
    VERSION_ERROR = 2007
    SERVER_LOST = 2013
    MALFORMED_PACKET = 2027
    SSL_CONNECTION_ERROR = 2026
