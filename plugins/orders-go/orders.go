// orders-go: weir's example order handler in Go (the same handler as orders-rust; the
// behaviour is defined in plugins/README.md). weir.go next to it is the glue to weir's
// plugin contract.
package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode/utf8"
)

// Where enriched orders go.
const destination = "orders.enriched"

func init() { Handle = handle }

type order struct {
	id       string
	customer string
	amount   uint64
}

func handle(m *Message) (Outcome, *HandlerError) {
	o, reason := parseOrder(m.Payload)
	if reason != "" {
		return DeadLetter("invalid order: " + reason), nil
	}
	key := "orders/" + o.customer
	stored, found, err := KvGet(key)
	if err != nil {
		return Outcome{}, err
	}
	var count uint64
	if found {
		n, perr := strconv.ParseUint(string(stored), 10, 64)
		if perr != nil {
			return Outcome{}, &HandlerError{Message: "orders: kv value at " + key + " is not a decimal count"}
		}
		count = n
	}
	count++
	if err := KvSet(key, []byte(strconv.FormatUint(count, 10))); err != nil {
		return Outcome{}, err
	}
	customer := o.customer
	headers := [][2]string{{"content-type", "application/json"}}
	if err := Publish(destination, &customer, headers, enriched(o, count)); err != nil {
		return Outcome{}, err
	}
	return Ack(), nil
}

// parseOrder validates the payload; it returns the reason when it is not a valid order.
func parseOrder(payload []byte) (order, string) {
	if !utf8.Valid(payload) || !json.Valid(payload) {
		return order{}, "payload is not JSON"
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var doc any
	if dec.Decode(&doc) != nil {
		return order{}, "payload is not JSON"
	}
	fields, ok := doc.(map[string]any)
	if !ok {
		return order{}, "payload is not a JSON object"
	}
	id, ok := fields["order_id"].(string)
	if !ok || !validName(id) {
		return order{}, "order_id must be 1 to 64 letters, digits, '-' or '_'"
	}
	customer, ok := fields["customer"].(string)
	if !ok || !validName(customer) {
		return order{}, "customer must be 1 to 64 letters, digits, '-' or '_'"
	}
	number, ok := fields["amount"].(json.Number)
	amount, _ := strconv.ParseFloat(string(number), 64)
	if !ok || amount != math.Trunc(amount) || amount < 1 || amount > 100000000 {
		return order{}, "amount must be a whole number of cents from 1 to 100000000"
	}
	return order{id: id, customer: customer, amount: uint64(amount)}, ""
}

func validName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !ok {
			return false
		}
	}
	return true
}

// enriched is the published payload: fixed field order, no spaces.
func enriched(o order, count uint64) []byte {
	cents := strconv.FormatUint(o.amount%100, 10)
	if len(cents) < 2 {
		cents = "0" + cents
	}
	return []byte(`{"order_id":"` + o.id + `","customer":"` + o.customer +
		`","amount":` + strconv.FormatUint(o.amount, 10) +
		`,"amount_text":"` + strconv.FormatUint(o.amount/100, 10) + "." + cents +
		`","customer_orders":` + strconv.FormatUint(count, 10) + "}")
}
