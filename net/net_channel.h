/* Opening a channel: the 64-byte handshake of protocol/proto_handshake.h
 * both ways, inside TLS when the connection has it (who may connect is
 * TLS's question; what this connection is for is this exchange's).
 *
 * Return convention: 0 on success, -errno for an I/O failure, or a positive
 * enum proto_err saying what was wrong with the peer. */
#ifndef PF_NET_CHANNEL_H
#define PF_NET_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "net/net_conn.h"
#include "protocol/proto_handshake.h"

/* Sender: offer `ours`, check the receiver's answer.  *refused is set when
 * the receiver said no (the error is its reason). */
int net_channel_offer(struct net_conn *c, const struct proto_handshake *ours, int *refused);

/* Receiver: decode an offer's bytes (a status other than OK is an error:
 * senders never send one). */
enum proto_err net_channel_decode_offer(const uint8_t buf[PROTO_HANDSHAKE_SIZE], struct proto_handshake *peer);
/* Receiver: answer an offer.  status != PROTO_OK refuses it (`agreed` may
 * then be NULL). */
int net_channel_answer(struct net_conn *c, const struct proto_handshake *agreed, enum proto_err status);

#endif
