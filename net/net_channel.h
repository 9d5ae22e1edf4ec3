/* Opening a channel: the handshake both ways, then (when both ends have a
 * pre-shared key) the challenge-response of protocol/proto_auth.h.
 *
 * Return convention: 0 on success, -errno for an I/O failure, or a positive
 * enum proto_err saying what was wrong with the peer. */
#ifndef PF_NET_CHANNEL_H
#define PF_NET_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/proto_auth.h"
#include "protocol/proto_handshake.h"

struct net_psk {
	uint8_t key[PROTO_PSK_MAX];
	size_t len;		/* 0: no key */
};

/* Read a key file (trailing newlines dropped).  -EINVAL with *why when it is
 * shorter than PROTO_PSK_MIN or longer than PROTO_PSK_MAX bytes. */
int net_psk_read(int fd, struct net_psk *psk, const char **why);

/* Sender: offer `ours`, check the receiver's answer, authenticate.
 * *refused is set when the receiver said no (the error is its reason). */
int net_channel_offer(int fd, const struct proto_handshake *ours, const struct net_psk *psk, int *refused);

/* Receiver: read and decode the sender's offer. */
int net_channel_read_offer(int fd, struct proto_handshake *peer);
/* Receiver: answer an offer.  status != PROTO_OK refuses it (`agreed` may
 * then be NULL).  On acceptance with a key, runs the challenge and returns
 * PROTO_E_PSK if the sender's proof is wrong. */
int net_channel_answer(int fd, const struct proto_handshake *agreed, enum proto_err status,
		       const struct net_psk *psk);

#endif
