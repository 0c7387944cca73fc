// orders-c: weir's example order handler in C (the same handler as orders-rust; the behaviour
// is defined in plugins/README.md). Validates an order, counts the customer's orders in kv
// `orders/<customer>` (decimal text), publishes the enriched order to `orders.enriched`, and
// dead-letters what is not a valid order.
//
// Built by scripts/build-plugins against the C bindings wit-bindgen-c generates from wit/
// (world message-handler). C has no JSON parser, so a small strict one (RFC 8259) is below:
// it checks the whole document and keeps only the three fields an order needs.

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "message_handler.h"

typedef message_handler_string_t string_t;

#define DESTINATION "orders.enriched"
#define MAX_NAME 64
#define MAX_DEPTH 128

// A string member the order needs: valid while it is 1 to 64 of [A-Za-z0-9_-].
typedef struct {
  bool present;
  bool valid;
  size_t len;
  char text[MAX_NAME];
} name_t;

typedef struct {
  const uint8_t *p;
  const uint8_t *end;
  int depth;
  name_t order_id;
  name_t customer;
  bool amount_is_number;
  double amount;
} parser_t;

static void skip_ws(parser_t *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) {
    ps->p++;
  }
}

static int hex_digit(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Length of the UTF-8 sequence at p (1-4), or 0 when it is not valid UTF-8.
static size_t utf8_len(const uint8_t *p, const uint8_t *end) {
  uint8_t c = p[0];
  size_t n;
  uint32_t cp;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
  else return 0;
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (p[i] & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
    return 0;
  }
  return n;
}

// Adds one decoded character (ASCII byte, or a non-ASCII one, which no name allows) to `out`.
static void name_push(name_t *out, bool ascii, uint8_t c) {
  bool allowed = ascii && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                           c == '-' || c == '_');
  if (!allowed || out->len == MAX_NAME) {
    out->valid = false;
    return;
  }
  out->text[out->len++] = (char)c;
}

// Parses a string (the opening quote is next); its decoded characters go to `out` when given.
static bool parse_string(parser_t *ps, name_t *out) {
  if (out) {
    out->present = true;
    out->valid = true;
    out->len = 0;
  }
  ps->p++;
  while (ps->p < ps->end) {
    uint8_t c = *ps->p;
    if (c == '"') {
      ps->p++;
      if (out && out->len == 0) out->valid = false;
      return true;
    }
    if (c < 0x20) return false;
    if (c == '\\') {
      if (ps->end - ps->p < 2) return false;
      uint8_t e = ps->p[1];
      ps->p += 2;
      uint8_t decoded;
      switch (e) {
        case '"': decoded = '"'; break;
        case '\\': decoded = '\\'; break;
        case '/': decoded = '/'; break;
        case 'b': decoded = '\b'; break;
        case 'f': decoded = '\f'; break;
        case 'n': decoded = '\n'; break;
        case 'r': decoded = '\r'; break;
        case 't': decoded = '\t'; break;
        case 'u': {
          if (ps->end - ps->p < 4) return false;
          uint32_t cp = 0;
          for (int i = 0; i < 4; i++) {
            int d = hex_digit(ps->p[i]);
            if (d < 0) return false;
            cp = cp << 4 | (uint32_t)d;
          }
          ps->p += 4;
          if (out) name_push(out, cp < 0x80, (uint8_t)cp);
          continue;
        }
        default: return false;
      }
      if (out) name_push(out, true, decoded);
      continue;
    }
    size_t n = utf8_len(ps->p, ps->end);
    if (n == 0) return false;
    if (out) name_push(out, n == 1, c);
    ps->p += n;
  }
  return false;
}

// Parses a number; its value goes to `out` when given.
static bool parse_number(parser_t *ps, double *out) {
  const uint8_t *start = ps->p;
  if (ps->p < ps->end && *ps->p == '-') ps->p++;
  if (ps->p == ps->end) return false;
  if (*ps->p == '0') {
    ps->p++;
  } else if (*ps->p >= '1' && *ps->p <= '9') {
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
  } else {
    return false;
  }
  if (ps->p < ps->end && *ps->p == '.') {
    ps->p++;
    const uint8_t *digits = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    if (ps->p == digits) return false;
  }
  if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
    ps->p++;
    if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
    const uint8_t *digits = ps->p;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    if (ps->p == digits) return false;
  }
  if (out) {
    // strtod rounds correctly, like every other language's JSON parser.
    size_t len = (size_t)(ps->p - start);
    char *text = malloc(len + 1);
    if (!text) return false;
    memcpy(text, start, len);
    text[len] = '\0';
    *out = strtod(text, NULL);
    free(text);
  }
  return true;
}

static bool parse_literal(parser_t *ps, const char *word) {
  size_t len = strlen(word);
  if ((size_t)(ps->end - ps->p) < len || memcmp(ps->p, word, len) != 0) return false;
  ps->p += len;
  return true;
}

static bool parse_value(parser_t *ps, bool top);

// Parses an object; at the top level its `order_id`, `customer` and `amount` are kept (the
// last of duplicates wins).
static bool parse_object(parser_t *ps, bool top) {
  ps->p++;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    ps->p++;
    return true;
  }
  for (;;) {
    skip_ws(ps);
    if (ps->p == ps->end || *ps->p != '"') return false;
    name_t key = {0};
    if (!parse_string(ps, &key)) return false;
    skip_ws(ps);
    if (ps->p == ps->end || *ps->p != ':') return false;
    ps->p++;
    skip_ws(ps);
    bool is_order_id = top && key.valid && key.len == 8 && memcmp(key.text, "order_id", 8) == 0;
    bool is_customer = top && key.valid && key.len == 8 && memcmp(key.text, "customer", 8) == 0;
    bool is_amount = top && key.valid && key.len == 6 && memcmp(key.text, "amount", 6) == 0;
    if ((is_order_id || is_customer) && ps->p < ps->end && *ps->p == '"') {
      if (!parse_string(ps, is_order_id ? &ps->order_id : &ps->customer)) return false;
    } else if (is_amount && ps->p < ps->end && (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))) {
      if (!parse_number(ps, &ps->amount)) return false;
      ps->amount_is_number = true;
    } else {
      // Another member, or one of ours that is not of the expected type.
      if (is_order_id) ps->order_id = (name_t){0};
      if (is_customer) ps->customer = (name_t){0};
      if (is_amount) ps->amount_is_number = false;
      if (!parse_value(ps, false)) return false;
    }
    skip_ws(ps);
    if (ps->p == ps->end) return false;
    if (*ps->p == '}') {
      ps->p++;
      return true;
    }
    if (*ps->p != ',') return false;
    ps->p++;
  }
}

static bool parse_array(parser_t *ps) {
  ps->p++;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == ']') {
    ps->p++;
    return true;
  }
  for (;;) {
    if (!parse_value(ps, false)) return false;
    skip_ws(ps);
    if (ps->p == ps->end) return false;
    if (*ps->p == ']') {
      ps->p++;
      return true;
    }
    if (*ps->p != ',') return false;
    ps->p++;
  }
}

static bool parse_value(parser_t *ps, bool top) {
  skip_ws(ps);
  if (ps->p == ps->end) return false;
  switch (*ps->p) {
    case '{':
    case '[': {
      if (++ps->depth > MAX_DEPTH) return false;
      bool ok = *ps->p == '{' ? parse_object(ps, top) : parse_array(ps);
      ps->depth--;
      return ok;
    }
    case '"': return parse_string(ps, NULL);
    case 't': return parse_literal(ps, "true");
    case 'f': return parse_literal(ps, "false");
    case 'n': return parse_literal(ps, "null");
    default: return parse_number(ps, NULL);
  }
}

typedef struct {
  name_t order_id;
  name_t customer;
  uint64_t amount;
} order_t;

// Parses and validates an order; returns NULL, or the reason it is not a valid order.
static const char *parse_order(const uint8_t *payload, size_t len, order_t *order) {
  parser_t ps = {.p = payload, .end = payload + len};
  bool ok = parse_value(&ps, true);
  skip_ws(&ps);
  if (!ok || ps.p != ps.end) return "invalid order: payload is not JSON";
  // A valid document has a first non-space byte.
  const uint8_t *first = payload;
  while (*first == ' ' || *first == '\t' || *first == '\n' || *first == '\r') first++;
  if (*first != '{') return "invalid order: payload is not a JSON object";
  if (!ps.order_id.present || !ps.order_id.valid) {
    return "invalid order: order_id must be 1 to 64 letters, digits, '-' or '_'";
  }
  if (!ps.customer.present || !ps.customer.valid) {
    return "invalid order: customer must be 1 to 64 letters, digits, '-' or '_'";
  }
  double a = ps.amount;
  if (!ps.amount_is_number || !(a >= 1 && a <= 100000000) || a != (double)(uint64_t)a) {
    return "invalid order: amount must be a whole number of cents from 1 to 100000000";
  }
  order->order_id = ps.order_id;
  order->customer = ps.customer;
  order->amount = (uint64_t)a;
  return NULL;
}

// Appends the decimal digits of `n` at `out`; returns how many were written (at most 20).
static size_t put_decimal(char *out, uint64_t n) {
  char digits[20];
  size_t len = 0;
  do {
    digits[len++] = (char)('0' + n % 10);
    n /= 10;
  } while (n != 0);
  for (size_t i = 0; i < len; i++) out[i] = digits[len - 1 - i];
  return len;
}

static size_t put(char *out, const char *s, size_t len) {
  memcpy(out, s, len);
  return len;
}

#define PUT_LITERAL(out, s) put(out, s, sizeof s - 1)

// Fails the invocation. The bindings free the error message after the call returns, so it is
// copied to the heap.
static bool fail(exports_weir_plugin_handler_handler_error_t *err, const char *why, bool retryable) {
  message_handler_string_dup(&err->message, why);
  err->retryable = retryable;
  return false;
}

static bool kv_failed(exports_weir_plugin_handler_handler_error_t *err, weir_plugin_kv_kv_error_t *kv_err) {
  bool retryable = kv_err->tag == WEIR_PLUGIN_KV_KV_ERROR_UNAVAILABLE;
  weir_plugin_kv_kv_error_free(kv_err);
  return fail(err, retryable ? "key-value store unavailable" : "orders: kv refused a key or value as too large",
              retryable);
}

static bool count_and_publish(const order_t *order, exports_weir_plugin_handler_handler_error_t *err) {
  char key_text[sizeof "orders/" + MAX_NAME];
  size_t key_len = PUT_LITERAL(key_text, "orders/");
  key_len += put(key_text + key_len, order->customer.text, order->customer.len);
  string_t key = {(uint8_t *)key_text, key_len};
  weir_plugin_kv_kv_error_t kv_err;

  message_handler_option_list_u8_t stored;
  if (!weir_plugin_kv_get(&key, &stored, &kv_err)) return kv_failed(err, &kv_err);
  uint64_t count = 0;
  if (stored.is_some) {
    bool decimal = stored.val.len > 0 && stored.val.len <= 19;
    for (size_t i = 0; decimal && i < stored.val.len; i++) {
      uint8_t d = stored.val.ptr[i];
      decimal = d >= '0' && d <= '9';
      count = count * 10 + (uint64_t)(d - '0');
    }
    message_handler_option_list_u8_free(&stored);
    if (!decimal) return fail(err, "orders: kv value is not a decimal count", false);
  }
  count += 1;
  char count_text[20];
  message_handler_list_u8_t value = {(uint8_t *)count_text, put_decimal(count_text, count)};
  if (!weir_plugin_kv_set(&key, &value, &kv_err)) return kv_failed(err, &kv_err);

  char payload[256];
  size_t n = PUT_LITERAL(payload, "{\"order_id\":\"");
  n += put(payload + n, order->order_id.text, order->order_id.len);
  n += PUT_LITERAL(payload + n, "\",\"customer\":\"");
  n += put(payload + n, order->customer.text, order->customer.len);
  n += PUT_LITERAL(payload + n, "\",\"amount\":");
  n += put_decimal(payload + n, order->amount);
  n += PUT_LITERAL(payload + n, ",\"amount_text\":\"");
  n += put_decimal(payload + n, order->amount / 100);
  payload[n++] = '.';
  payload[n++] = (char)('0' + order->amount % 100 / 10);
  payload[n++] = (char)('0' + order->amount % 10);
  n += PUT_LITERAL(payload + n, "\",\"customer_orders\":");
  n += put_decimal(payload + n, count);
  payload[n++] = '}';

  message_handler_tuple2_string_string_t header;
  message_handler_string_set(&header.f0, "content-type");
  message_handler_string_set(&header.f1, "application/json");
  weir_plugin_publish_outgoing_t out = {
      .key = {.is_some = true, .val = {(uint8_t *)order->customer.text, order->customer.len}},
      .headers = {&header, 1},
      .payload = {(uint8_t *)payload, n},
  };
  string_t destination;
  message_handler_string_set(&destination, DESTINATION);
  weir_plugin_publish_publish_error_t pub_err;
  if (!weir_plugin_publish_publish(&destination, &out, &pub_err)) {
    weir_plugin_publish_publish_error_free(&pub_err);
    return fail(err, "orders: cannot publish to " DESTINATION, false);
  }
  return true;
}

bool exports_weir_plugin_handler_handle(exports_weir_plugin_handler_message_t *message,
                                        exports_weir_plugin_handler_outcome_t *ret,
                                        exports_weir_plugin_handler_handler_error_t *err) {
  order_t order;
  const char *reason = parse_order(message->payload.ptr, message->payload.len, &order);
  // The handler owns its argument.
  exports_weir_plugin_handler_message_free(message);
  if (reason) {
    ret->tag = WEIR_PLUGIN_TYPES_OUTCOME_DEAD_LETTER;
    message_handler_string_dup(&ret->val.dead_letter, reason);
    return true;
  }
  if (!count_and_publish(&order, err)) return false;
  ret->tag = WEIR_PLUGIN_TYPES_OUTCOME_ACK;
  return true;
}
