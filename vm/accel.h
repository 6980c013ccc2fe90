/* "accel": godwit's own test device (--device accel,id=NAME,state-size=SIZE).
 * It stands in for a VFIO device (a GPU or NIC with hundreds of MiB of
 * state): a large state that changes while the guest runs, sent while the
 * VM runs (save_precopy) and the rest with the VM stopped (save), plus the
 * x-query-accel QMP command that hashes the state so a test can compare the
 * source's and the destination's. Layout and behaviour: vm/accel.c. */
#ifndef GODWIT_VM_ACCEL_H
#define GODWIT_VM_ACCEL_H

#include <godwit/error.h>

struct vm;

/* Creates every accel device of vm->config (state filled, changing thread
 * started), registers each with vm->devices under its own id (instance 0,
 * version 1), and registers x-query-accel with vm->qmp (always, so a query
 * on a VM without accel devices gets a clear answer). Called once, at the
 * end of vm_devices_register. */
int accel_register(struct vm *vm, struct gw_error *err);


#endif
