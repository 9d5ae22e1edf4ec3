#include "dest/ds_live.h"

#include <string.h>
#include <urcu/urcu-qsbr.h>

void ds_live_init(struct ds_live *l, uint32_t n_inflaters)
{
	l->n_inflaters = n_inflaters;
	struct ds_live_table *t = &l->tables[0];
	t->n = n_inflaters;
	for (uint32_t i = 0; i < n_inflaters; i++) {
		t->index[i] = i;
		l->live[i] = true;
	}
	/* No reader runs yet; the threads that start later see it (pthread_create
	 * orders it before them). */
	l->current = t;
}

void ds_live_thread_start(void)
{
	urcu_qsbr_register_thread();
	urcu_qsbr_thread_offline();
}

void ds_live_thread_end(void)
{
	/* Unregistering expects an online thread. */
	urcu_qsbr_thread_online();
	urcu_qsbr_unregister_thread();
}

void ds_live_warm_up(struct ds_live *l)
{
	(void)l;
	urcu_qsbr_synchronize_rcu();
}

uint32_t ds_live_read(struct ds_live *l, bool live[SHM_MAX_WORKERS])
{
	memset(live, 0, SHM_MAX_WORKERS * sizeof(live[0]));
	urcu_qsbr_thread_online();
	urcu_qsbr_read_lock();
	const struct ds_live_table *t = rcu_dereference(l->current);
	uint32_t n = t->n;
	for (uint32_t k = 0; k < n; k++)
		live[t->index[k]] = true;
	urcu_qsbr_read_unlock();
	/* The quiescent state: from here this thread holds no reference. */
	urcu_qsbr_thread_offline();
	return n;
}

void ds_live_set(struct ds_live *l, uint32_t i, bool live)
{
	if (l->live[i] == live)
		return;
	l->live[i] = live;
	struct ds_live_table *next = l->current == &l->tables[0] ? &l->tables[1] : &l->tables[0];
	next->n = 0;
	for (uint32_t k = 0; k < l->n_inflaters; k++)
		if (l->live[k])
			next->index[next->n++] = k;
	rcu_assign_pointer(l->current, next);
	/* After this no reader holds the old table: the next update may fill it. */
	urcu_qsbr_synchronize_rcu();
}
