/* User-creatable objects, as QEMU's -object and object-add: the TLS
 * credentials (tls-creds-x509, tls-creds-psk, include/godwit/tls.h) and
 * authz-simple, which the migration parameters tls-creds and tls-authz
 * name by id. Each is checked when it is made; a bad property or file is
 * an error then, with a sentence, and nothing is added. */
#ifndef GODWIT_OBJECTS_H
#define GODWIT_OBJECTS_H

#include <stddef.h>

#include <jansson.h>

#include <godwit/error.h>
#include <godwit/tls.h>

#define OBJECTS_MAX 64

struct objects;

struct objects *objects_new(void);
void objects_free(struct objects *objects);

/* TYPE,id=ID,KEY=VALUE,... as godwit-vm's --object takes it. */
int objects_add_option(struct objects *objects, const char *text, struct gw_error *err);
/* QMP object-add's arguments: qom-type, id and the type's properties. */
int objects_add_json(struct objects *objects, json_t *args, struct gw_error *err);
int objects_del(struct objects *objects, const char *id, struct gw_error *err);

/* A reference to the credentials with this id (the caller unrefs), or
 * -ENOENT / -EINVAL with a sentence that names the parameter. */
int objects_tls_creds(struct objects *objects, const char *id, struct tls_creds **creds,
                      struct gw_error *err);
/* The identity of the authz-simple object with this id. */
int objects_authz_identity(struct objects *objects, const char *id, char *identity,
                           size_t len, struct gw_error *err);

#endif
