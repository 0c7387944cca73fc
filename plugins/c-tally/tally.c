// c-tally: a weir handler written in C; counts messages in kv key `tally` and refuses `boom`.
//
// Built by scripts/build-plugins against C bindings that wit-bindgen-c generates from wit/
// (world message-handler), with clang for wasm32 and no libc start files or stdio, so the
// component imports nothing but weir:plugin/*.

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "message_handler.h"

typedef message_handler_string_t string_t;

// Fails the invocation. The bindings free the error message after the call returns, so it is
// copied to the heap.
static bool fail(exports_weir_plugin_handler_handler_error_t *err, const char *why,
                 bool retryable) {
  message_handler_string_dup(&err->message, why);
  err->retryable = retryable;
  return false;
}

// Fails the invocation after a kv error: an unavailable store is worth a retry, a size limit
// is not.
static bool kv_failed(exports_weir_plugin_handler_handler_error_t *err,
                      weir_plugin_kv_kv_error_t *kv_err, const char *why) {
  bool retryable = kv_err->tag == WEIR_PLUGIN_KV_KV_ERROR_UNAVAILABLE;
  weir_plugin_kv_kv_error_free(kv_err);
  return fail(err, why, retryable);
}

// Appends the decimal digits of `n` at `out`; returns how many were written (at most 20).
static size_t put_decimal(char *out, uint64_t n) {
  char digits[20];
  size_t len = 0;
  do {
    digits[len++] = (char)('0' + n % 10);
    n /= 10;
  } while (n != 0);
  for (size_t i = 0; i < len; i++) {
    out[i] = digits[len - 1 - i];
  }
  return len;
}

// Logs "c-tally: tally is <n>" at debug level.
static void log_tally(uint64_t tally) {
  static const char prefix[] = "c-tally: tally is ";
  char line[sizeof prefix + 20];
  memcpy(line, prefix, sizeof prefix - 1);
  size_t len = sizeof prefix - 1 + put_decimal(line + sizeof prefix - 1, tally);
  string_t message = {(uint8_t *)line, len};
  weir_plugin_log_log(WEIR_PLUGIN_LOG_LEVEL_DEBUG, &message);
}

bool exports_weir_plugin_handler_handle(exports_weir_plugin_handler_message_t *message,
                                        exports_weir_plugin_handler_outcome_t *ret,
                                        exports_weir_plugin_handler_handler_error_t *err) {
  // The handler owns its argument.
  bool boom = message->payload.len == 4 && memcmp(message->payload.ptr, "boom", 4) == 0;
  exports_weir_plugin_handler_message_free(message);
  if (boom) {
    return fail(err, "c-tally refuses boom", false);
  }

  string_t key;
  message_handler_string_set(&key, "tally");
  weir_plugin_kv_kv_error_t kv_err;

  message_handler_option_list_u8_t stored;
  if (!weir_plugin_kv_get(&key, &stored, &kv_err)) {
    return kv_failed(err, &kv_err, "c-tally could not read kv key `tally`");
  }
  uint64_t tally = 0;
  if (stored.is_some) {
    bool well_formed = stored.val.len == 8;
    for (size_t i = 0; well_formed && i < 8; i++) {
      tally |= (uint64_t)stored.val.ptr[i] << (8 * i);
    }
    message_handler_option_list_u8_free(&stored);
    if (!well_formed) {
      return fail(err, "c-tally expected 8 bytes at kv key `tally`", false);
    }
  }

  tally += 1;
  uint8_t bytes[8];
  for (size_t i = 0; i < 8; i++) {
    bytes[i] = (uint8_t)(tally >> (8 * i));
  }
  message_handler_list_u8_t value = {bytes, sizeof bytes};
  if (!weir_plugin_kv_set(&key, &value, &kv_err)) {
    return kv_failed(err, &kv_err, "c-tally could not write kv key `tally`");
  }

  log_tally(tally);
  ret->tag = WEIR_PLUGIN_TYPES_OUTCOME_ACK;
  return true;
}
