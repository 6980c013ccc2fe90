/* QMP argument checking against a command's declared arguments, with QEMU's
 * wording so scripts written against QEMU read the same errors. */
#include <godwit/qmp.h>

#include <errno.h>
#include <string.h>

static const char *type_name(enum qmp_arg_type type)
{
    switch (type) {
    case QMP_ARG_INT: return "integer";
    case QMP_ARG_UINT: return "integer";
    case QMP_ARG_NUMBER: return "number";
    case QMP_ARG_BOOL: return "boolean";
    case QMP_ARG_STR: return "string";
    case QMP_ARG_OBJECT: return "object";
    case QMP_ARG_ANY: return "any";
    }
    return "?";
}

static bool type_matches(enum qmp_arg_type type, json_t *value)
{
    switch (type) {
    case QMP_ARG_INT: return json_is_integer(value);
    case QMP_ARG_UINT: return json_is_integer(value) && json_integer_value(value) >= 0;
    case QMP_ARG_NUMBER: return json_is_number(value);
    case QMP_ARG_BOOL: return json_is_boolean(value);
    case QMP_ARG_STR: return json_is_string(value);
    case QMP_ARG_OBJECT: return json_is_object(value);
    case QMP_ARG_ANY: return true;
    }
    return false;
}

static const struct qmp_arg *find_arg(const struct qmp_arg *spec, const char *name)
{
    for (; spec && spec->name; spec++)
        if (!strcmp(spec->name, name))
            return spec;
    return NULL;
}

int qmp_args_check(const struct qmp_arg *spec, json_t *args, struct gw_error *err)
{
    const char *key;
    json_t *value;

    for (const struct qmp_arg *arg = spec; arg && arg->name; arg++) {
        value = args ? json_object_get(args, arg->name) : NULL;
        if (!value) {
            if (!arg->optional)
                return gw_error_set(err, -EINVAL, "Parameter '%s' is missing", arg->name);
            continue;
        }
        if (arg->type == QMP_ARG_UINT && json_is_integer(value) && json_integer_value(value) < 0)
            return gw_error_set(err, -EINVAL, "Parameter '%s' must not be negative", arg->name);
        if (!type_matches(arg->type, value))
            return gw_error_set(err, -EINVAL, "Invalid parameter type for '%s', expected: %s",
                                arg->name, type_name(arg->type));
    }
    if (args) {
        json_object_foreach(args, key, value) {
            if (!find_arg(spec, key))
                return gw_error_set(err, -EINVAL, "Parameter '%s' is unexpected", key);
        }
    }
    return 0;
}
