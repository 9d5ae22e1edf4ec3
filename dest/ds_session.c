/* The receiver's session set-up: listen, accept the main channel and the
 * data channels, check every handshake (and key proof) against the main
 * channel's, all before lock-down. */
#include "dest/ds_net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "net/net_socket.h"
#include "stage/stage.h"

#define HANDSHAKE_TIMEOUT_MS 10000
#define DATA_CHANNEL_WAIT_MS 30000

static int accept_one(struct ds_net *r, int timeout_ms, struct net_addr *peer, const char *what)
{
	int fd = net_accept(r->listen_fd, timeout_ms, peer);
	if (fd == -ETIMEDOUT)
		stage_die(STAGE_EXIT_FAILED, "no %s connected within %d s", what, timeout_ms / 1000);
	if (fd < 0)
		stage_die_errno(fd, "accept on %s", what);
	int rc = net_set_io_timeout(fd, r->io_timeout_ms);
	if (rc < 0 || (rc = net_set_timeout(fd, HANDSHAKE_TIMEOUT_MS)) < 0)
		stage_die_errno(rc, "socket timeouts on the %s from %s", what, peer->text);
	return fd;
}

/* Answer an offer; on refusal or a failed key proof, die naming why (the
 * refusal's own words, or `detail` where the receiver knows more). */
static void answer(struct ds_net *r, int fd, const struct proto_handshake *agreed, enum proto_err status,
		   const struct net_psk *psk, const char *who, const char *detail)
{
	int rc = net_channel_answer(fd, agreed, status, psk);
	if (status != PROTO_OK)
		stage_die(STAGE_EXIT_FAILED, "refused %s: %s", who, detail ? detail : proto_strerror(status));
	if (rc > 0)
		stage_die(STAGE_EXIT_FAILED, "refused %s: %s", who, proto_strerror((enum proto_err)rc));
	if (rc < 0)
		stage_die_errno(rc, "handshake with %s", who);
	(void)r;
}

static void version_detail(char *buf, size_t len, const struct proto_handshake *h)
{
	snprintf(buf, len, "%s: the sender speaks wire protocol version %u, this receiver version %u",
		 proto_strerror(PROTO_E_VERSION), h->version, PROTO_VERSION);
}

static enum proto_err check_main_offer(const struct ds_net *r, const struct proto_handshake *h,
				       const struct net_psk *psk)
{
	if (h->channel_kind != PROTO_CHAN_MAIN)
		return PROTO_E_CHANNEL_KIND;
	if (!!(h->features & PROTO_F_PSK) != (psk->len > 0))
		return PROTO_E_PSK_MISSING;
	if (r->inplace && h->geo.guest_pages * h->geo.page_size != r->inplace->size)
		return PROTO_E_DEST_SIZE;
	return PROTO_OK;
}

void ds_net_accept_session(struct ds_net *r, const char *listen_addr, const struct net_psk *psk,
			   int accept_timeout_ms)
{
	struct net_addr addr, peer;
	const char *why = "";
	r->main_fd = -1;
	if (net_resolve(listen_addr, 1, &addr, &why) < 0)
		stage_die(STAGE_EXIT_FAILED, "listen address %s: %s", listen_addr, why);
	r->listen_fd = net_listen(&addr);
	if (r->listen_fd < 0)
		stage_die_errno(r->listen_fd, "listen on %s", listen_addr);
	stage_stat_set(r->stats, SHM_STAT_STATE, SHM_PROC_LISTENING);

	char who[200];
	int fd = accept_one(r, accept_timeout_ms, &peer, "main channel");
	snprintf(who, sizeof(who), "main channel from %s", peer.text);
	snprintf(r->peer, sizeof(r->peer), "%s", peer.text);
	struct proto_handshake h;
	int rc = net_channel_read_offer(fd, &h);
	if (rc < 0)
		stage_die_errno(rc, "reading the handshake of %s", who);
	enum proto_err err = rc > 0 ? (enum proto_err)rc : check_main_offer(r, &h, psk);
	char sizes[128];
	if (err == PROTO_E_DEST_SIZE)
		snprintf(sizes, sizeof(sizes), "the guest is %llu bytes but the destination (--in-place) is %llu",
			 (unsigned long long)(h.geo.guest_pages * h.geo.page_size), (unsigned long long)r->inplace->size);
	else if (err == PROTO_E_VERSION)
		version_detail(sizes, sizeof(sizes), &h);
	/* An offer that did not decode gets the placeholder geometry back. */
	answer(r, fd, rc > 0 ? NULL : &h, err, psk, who, err == PROTO_E_DEST_SIZE || err == PROTO_E_VERSION ? sizes : NULL);
	r->hs = h;
	r->geo = h.geo;
	r->n_channels = h.n_channels;
	r->main_fd = fd;

	for (uint32_t connected = 0; connected < r->n_channels; connected++) {
		fd = accept_one(r, DATA_CHANNEL_WAIT_MS, &peer, "data channel");
		snprintf(who, sizeof(who), "data channel from %s", peer.text);
		rc = net_channel_read_offer(fd, &h);
		if (rc < 0)
			stage_die_errno(rc, "reading the handshake of %s", who);
		err = rc > 0 ? (enum proto_err)rc : proto_handshake_match(&h, &r->hs);
		if (err == PROTO_OK && h.channel_kind != PROTO_CHAN_DATA)
			err = PROTO_E_CHANNEL_KIND;
		if (err == PROTO_OK && r->ch[h.channel_id].fd > 0)
			err = PROTO_E_CHANNEL_DUPLICATE;
		char detail[128];
		if (err == PROTO_E_VERSION)
			version_detail(detail, sizeof(detail), &h);
		answer(r, fd, rc > 0 ? NULL : &h, err, psk, who, err == PROTO_E_VERSION ? detail : NULL);
		r->ch[h.channel_id].fd = fd;
		r->ch[h.channel_id].round = 1;
		r->ch[h.channel_id].staging = malloc(DS_STAGING_BYTES);
		if (!r->ch[h.channel_id].staging)
			stage_die_errno(-ENOMEM, "staging buffer");
		/* From here on a sender may pause between packets, but not forever. */
		net_set_timeout(fd, ds_net_silence_ms(r));
	}
	net_set_timeout(r->main_fd, ds_net_silence_ms(r));
	close(r->listen_fd);
	r->listen_fd = -1;
}
