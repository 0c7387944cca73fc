//! orders-zig: weir's example order handler in Zig (the same handler as orders-rust; the
//! behaviour is defined in plugins/README.md). Zig calls the C bindings that wit-bindgen-c
//! generates from wit/ (world message-handler) through @cImport; scripts/build-plugins
//! compiles them together with `zig build-exe -target wasm32-wasi -lc`.

const std = @import("std");
const c = @import("message_handler"); // zig translate-c of the generated C header

/// Where enriched orders go.
const destination = "orders.enriched";

const allocator = std.heap.c_allocator;

const Order = struct {
    id: []const u8,
    customer: []const u8,
    amount: u64,
};

const Invalid = error{
    NotJson,
    NotObject,
    BadOrderId,
    BadCustomer,
    BadAmount,
};

fn reason(e: Invalid) []const u8 {
    return switch (e) {
        error.NotJson => "invalid order: payload is not JSON",
        error.NotObject => "invalid order: payload is not a JSON object",
        error.BadOrderId => "invalid order: order_id must be 1 to 64 letters, digits, '-' or '_'",
        error.BadCustomer => "invalid order: customer must be 1 to 64 letters, digits, '-' or '_'",
        error.BadAmount => "invalid order: amount must be a whole number of cents from 1 to 100000000",
    };
}

fn validName(v: ?std.json.Value) ?[]const u8 {
    const s = switch (v orelse return null) {
        .string => |s| s,
        else => return null,
    };
    if (s.len < 1 or s.len > 64) return null;
    for (s) |ch| {
        const ok = std.ascii.isAlphanumeric(ch) or ch == '-' or ch == '_';
        if (!ok) return null;
    }
    return s;
}

/// Parses and validates an order. Strings in the result live in `arena`.
fn parseOrder(arena: std.mem.Allocator, payload: []const u8) Invalid!Order {
    if (!std.unicode.utf8ValidateSlice(payload)) return error.NotJson;
    const doc = std.json.parseFromSliceLeaky(std.json.Value, arena, payload, .{
        .duplicate_field_behavior = .use_last,
        .parse_numbers = false,
    }) catch return error.NotJson;
    const fields = switch (doc) {
        .object => |o| o,
        else => return error.NotObject,
    };
    const id = validName(fields.get("order_id")) orelse return error.BadOrderId;
    const customer = validName(fields.get("customer")) orelse return error.BadCustomer;
    const number = switch (fields.get("amount") orelse return error.BadAmount) {
        .number_string => |s| s,
        else => return error.BadAmount,
    };
    const amount = std.fmt.parseFloat(f64, number) catch return error.BadAmount;
    if (!(amount >= 1 and amount <= 100000000) or amount != @trunc(amount)) return error.BadAmount;
    return .{ .id = id, .customer = customer, .amount = @intFromFloat(amount) };
}

fn str(s: []const u8) c.message_handler_string_t {
    return .{ .ptr = @constCast(s.ptr), .len = s.len };
}

/// Fails the invocation; weir frees the message after the call, so it is copied to the heap.
fn fail(err: *c.exports_weir_plugin_handler_handler_error_t, message: []const u8, retryable: bool) bool {
    c.message_handler_string_dup_n(&err.message, message.ptr, message.len);
    err.retryable = retryable;
    return false;
}

fn kvFailed(err: *c.exports_weir_plugin_handler_handler_error_t, kv_err: *c.weir_plugin_kv_kv_error_t) bool {
    const retryable = kv_err.tag == c.WEIR_PLUGIN_KV_KV_ERROR_UNAVAILABLE;
    c.weir_plugin_kv_kv_error_free(kv_err);
    return fail(err, if (retryable) "key-value store unavailable" else "orders: refused by the host: key or value too large", retryable);
}

fn countAndPublish(arena: std.mem.Allocator, order: Order, err: *c.exports_weir_plugin_handler_handler_error_t) bool {
    const key = std.fmt.allocPrint(arena, "orders/{s}", .{order.customer}) catch return fail(err, "orders: out of memory", false);
    var kv_key = str(key);
    var kv_err: c.weir_plugin_kv_kv_error_t = undefined;
    var stored: c.message_handler_option_list_u8_t = undefined;
    if (!c.weir_plugin_kv_get(&kv_key, &stored, &kv_err)) return kvFailed(err, &kv_err);
    var count: u64 = 0;
    if (stored.is_some) {
        const text = stored.val.ptr[0..stored.val.len];
        const parsed = std.fmt.parseUnsigned(u64, text, 10);
        c.message_handler_option_list_u8_free(&stored);
        count = parsed catch {
            const why = std.fmt.allocPrint(arena, "orders: kv value at {s} is not a decimal count", .{key}) catch "orders: bad kv value";
            return fail(err, why, false);
        };
    }
    count += 1;
    const count_text = std.fmt.allocPrint(arena, "{d}", .{count}) catch return fail(err, "orders: out of memory", false);
    var value: c.message_handler_list_u8_t = .{ .ptr = @constCast(count_text.ptr), .len = count_text.len };
    if (!c.weir_plugin_kv_set(&kv_key, &value, &kv_err)) return kvFailed(err, &kv_err);

    const payload = std.fmt.allocPrint(
        arena,
        "{{\"order_id\":\"{s}\",\"customer\":\"{s}\",\"amount\":{d},\"amount_text\":\"{d}.{d:0>2}\",\"customer_orders\":{d}}}",
        .{ order.id, order.customer, order.amount, order.amount / 100, order.amount % 100, count },
    ) catch return fail(err, "orders: out of memory", false);
    var header = [_]c.message_handler_tuple2_string_string_t{.{ .f0 = str("content-type"), .f1 = str("application/json") }};
    var out: c.weir_plugin_publish_outgoing_t = .{
        .key = .{ .is_some = true, .val = str(order.customer) },
        .headers = .{ .ptr = &header, .len = header.len },
        .payload = .{ .ptr = @constCast(payload.ptr), .len = payload.len },
    };
    var dest = str(destination);
    var pub_err: c.weir_plugin_publish_publish_error_t = undefined;
    if (!c.weir_plugin_publish_publish(&dest, &out, &pub_err)) {
        c.weir_plugin_publish_publish_error_free(&pub_err);
        return fail(err, "orders: cannot publish to " ++ destination, false);
    }
    return true;
}

export fn exports_weir_plugin_handler_handle(
    message: *c.exports_weir_plugin_handler_message_t,
    ret: *c.exports_weir_plugin_handler_outcome_t,
    err: *c.exports_weir_plugin_handler_handler_error_t,
) bool {
    // The handler owns its argument; everything else of this call lives in one arena.
    defer c.exports_weir_plugin_handler_message_free(message);
    var arena_state = std.heap.ArenaAllocator.init(allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();

    const order = parseOrder(arena, message.payload.ptr[0..message.payload.len]) catch |e| {
        const why = reason(e);
        ret.tag = c.WEIR_PLUGIN_TYPES_OUTCOME_DEAD_LETTER;
        c.message_handler_string_dup_n(&ret.val.dead_letter, why.ptr, why.len);
        return true;
    };
    if (!countAndPublish(arena, order, err)) return false;
    ret.tag = c.WEIR_PLUGIN_TYPES_OUTCOME_ACK;
    return true;
}
