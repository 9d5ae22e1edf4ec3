#include "protocol/proto_error.h"

static const char *const messages[_PROTO_E_MAX] = {
	[PROTO_OK] = "no error",
	[PROTO_E_TRUNCATED] = "truncated: fewer bytes than the message needs",
	[PROTO_E_MAGIC] = "bad magic: not a pageferry message",
	[PROTO_E_VERSION] = "unsupported protocol or format version",
	[PROTO_E_HEADER_CHECKSUM] = "header checksum mismatch",
	[PROTO_E_RESERVED] = "reserved field is not zero",
	[PROTO_E_CHANNEL_KIND] = "unknown channel kind",
	[PROTO_E_CHANNEL_ID] = "channel id out of range",
	[PROTO_E_CHANNEL_COUNT] = "channel count out of range or different from ours",
	[PROTO_E_SESSION] = "session id does not match this transfer",
	[PROTO_E_PAGE_SIZE] = "page size unsupported or different from ours",
	[PROTO_E_GUEST_SIZE] = "guest size is zero, too large, or different from ours",
	[PROTO_E_RUN_LIMIT] = "page-run limit out of range or different from ours",
	[PROTO_E_GEOMETRY] = "geometry does not match",
	[PROTO_E_FEATURES] = "unknown or unsupported feature bits",
	[PROTO_E_PACKET_TYPE] = "unknown packet type",
	[PROTO_E_ENCODING] = "unknown page encoding for this packet type",
	[PROTO_E_FLAGS] = "unknown flag bits",
	[PROTO_E_PAGE_COUNT] = "page count is zero or over the run limit",
	[PROTO_E_PAGE_OFFSET] = "page offset past the end of guest RAM",
	[PROTO_E_PAYLOAD_LEN] = "payload length impossible for the page count and encoding",
	[PROTO_E_PAYLOAD_CHECKSUM] = "payload checksum mismatch",
	[PROTO_E_SNAP_INCOMPLETE] = "snapshot is incomplete: it was never finished (interrupted or failed while being written)",
	[PROTO_E_SNAP_STATE] = "snapshot state field has an unknown value",
	[PROTO_E_SNAP_FILE_SIZE] = "snapshot file is shorter than its header says (truncated)",
	[PROTO_E_BITMAP_OFFSET] = "bitmap offset is not where this format puts it",
	[PROTO_E_BITMAP_LEN] = "bitmap length does not match the page count",
	[PROTO_E_DATA_OFFSET] = "data offset is not 1 MiB-aligned or overlaps the bitmap",
	[PROTO_E_BITMAP_CHECKSUM] = "bitmap checksum mismatch (corrupt bitmap)",
	[PROTO_E_BITMAP_TAIL] = "bitmap has bits set past the last page",
	[PROTO_E_PRESENT_COUNT] = "present-page count does not match the bitmap",
	[PROTO_E_DESC_TYPE] = "descriptor has an unknown type",
	[PROTO_E_DESC_BUFFER] = "descriptor names a buffer that does not exist",
	[PROTO_E_STATUS] = "status code out of range",
	[PROTO_E_PSK] = "pre-shared key proof does not match (wrong or missing key)",
	[PROTO_E_PSK_MISSING] = "one end uses a pre-shared key and the other does not",
	[PROTO_E_CHANNEL_DUPLICATE] = "data channel id already connected",
	[PROTO_E_SEQUENCE] = "packet sequence number out of order (lost or replayed packet)",
	[PROTO_E_ROUND] = "round number goes backwards or skips ahead",
	[PROTO_E_END_TOTALS] = "end marker totals differ from what arrived",
	[PROTO_E_END_CHECKSUM] = "end marker checksum differs from the packets that arrived",
	[PROTO_E_ZSTD_FRAME] = "compressed payload is not a valid zstd frame",
	[PROTO_E_ZSTD_SIZE] = "compressed payload decompresses to a size other than its page count",
	[PROTO_E_RESULT] = "result message malformed",
	[PROTO_E_CANCELLED] = "the migration was cancelled by the sender",
	[PROTO_E_DEST_SIZE] = "the receiver's existing destination file (--in-place) is not the size of the guest",
	[PROTO_E_SPARSE_BITMAP] = "sparse page bitmap has bits past the run or does not match the payload length",
};

const char *proto_strerror(enum proto_err err)
{
	if ((unsigned)err >= _PROTO_E_MAX || !messages[err])
		return "unknown protocol error";
	return messages[err];
}
