// orders-js: weir's example order handler in JavaScript (the same handler as orders-rust; the
// behaviour is defined in plugins/README.md). Built with componentize-js against wit/ (world
// message-handler): each imported interface is a module, the export is `handler`.

import { get, set } from 'weir:plugin/kv@0.1.1';
import { publish } from 'weir:plugin/publish@0.1.1';

// Where enriched orders go.
const DESTINATION = 'orders.enriched';

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

class Invalid extends Error {}

function parseOrder(payload) {
  let doc;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    throw new Invalid('payload is not JSON');
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new Invalid('payload is not a JSON object');
  }
  const { order_id: orderId, customer, amount } = doc;
  if (typeof orderId !== 'string' || !NAME.test(orderId)) {
    throw new Invalid("order_id must be 1 to 64 letters, digits, '-' or '_'");
  }
  if (typeof customer !== 'string' || !NAME.test(customer)) {
    throw new Invalid("customer must be 1 to 64 letters, digits, '-' or '_'");
  }
  if (typeof amount !== 'number' || !Number.isInteger(amount) || amount < 1 || amount > 100000000) {
    throw new Invalid('amount must be a whole number of cents from 1 to 100000000');
  }
  return { orderId, customer, amount };
}

// A handler error (the `err` of `handle`); weir retries it when `retryable`.
function fail(message, retryable) {
  const e = new Error(message);
  e.payload = { message, retryable };
  return e;
}

// The host refused a kv or publish call: retryable when the store was unavailable.
function hostError(e) {
  const error = e && e.payload !== undefined ? e.payload : e;
  if (error && error.tag === 'unavailable') {
    return fail(`key-value store unavailable: ${error.val}`, true);
  }
  return fail(`orders: refused by the host: ${JSON.stringify(error)}`, false);
}

function countAndPublish({ orderId, customer, amount }) {
  const key = `orders/${customer}`;
  const stored = get(key);
  let count = 0;
  if (stored !== undefined && stored !== null) {
    const text = new TextDecoder().decode(stored);
    if (!/^[0-9]+$/.test(text)) {
      throw fail(`orders: kv value at ${key} is not a decimal count`, false);
    }
    count = Number(text);
  }
  count += 1;
  set(key, new TextEncoder().encode(String(count)));
  const cents = String(amount % 100).padStart(2, '0');
  const payload =
    `{"order_id":"${orderId}","customer":"${customer}","amount":${amount},` +
    `"amount_text":"${Math.floor(amount / 100)}.${cents}","customer_orders":${count}}`;
  publish(DESTINATION, {
    key: customer,
    headers: [['content-type', 'application/json']],
    payload: new TextEncoder().encode(payload),
  });
}

export const handler = {
  handle(message) {
    let order;
    try {
      order = parseOrder(message.payload);
    } catch (e) {
      if (e instanceof Invalid) {
        return { tag: 'dead-letter', val: `invalid order: ${e.message}` };
      }
      throw e;
    }
    try {
      countAndPublish(order);
    } catch (e) {
      throw e && e.payload && typeof e.payload.retryable === 'boolean' ? e : hostError(e);
    }
    return { tag: 'ack' };
  },
};
