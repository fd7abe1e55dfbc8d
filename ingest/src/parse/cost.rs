//! How much memory parsing a body can take at its peak, bounded from one pass over its
//! bytes before any of it is parsed, so the HTTP layer can reserve that much of the
//! pod's memory budget first (or refuse the body) instead of finding out from the
//! kernel's OOM killer.
//!
//! The bound follows how the parse allocates (`parse::stream`): one item at a time as a
//! `serde_json::Value` (the measurements format keeps less: only the fields it reads), so
//! the largest item counts, not their sum; then the rows and at
//! most [`MAX_EXPLANATIONS`] explanations it keeps. The constants are what `Value`,
//! `BTreeMap` and `Vec` take on a 64-bit target, rounded up, with growth counted at its
//! worst (a `Vec` holds its old and new buffer while it grows). `ingest/tests/parse_memory.rs`
//! measures real parses of many shapes against the bound with a counting allocator.

use super::{Limits, MAX_EXPLANATIONS};

/// An element of an array: its 32-byte `Value`, three times over while the `Vec` grows.
const ARRAY_ELEMENT: usize = 96;
/// A `Vec`'s first buffer.
const ARRAY: usize = 64;
/// A non-empty object: the first B-tree leaf (11 slots of key and value) and one
/// internal node, with the allocator's rounding.
const OBJECT: usize = 1_408;
/// Each further member: its share of further nodes (at least 5 members per node).
const MEMBER: usize = 176;
/// A heap string: its bytes (the JSON text is never shorter than what it decodes to) and
/// the allocator's rounding.
const STRING: usize = 32;
/// A row: a `Measurement` (96 bytes) three times over while the rows' `Vec` grows, and
/// the rounding of its three strings.
const ROW: usize = 3 * 96 + 3 * STRING;
/// An explanation: `Rejected`/`Ignored` (56 bytes) three times over while its `Vec` grows,
/// its field (at most 256 characters) and its reason (a sentence, with at most a short
/// piece of the body, e.g. a number that is not finite).
const EXPLANATION: usize = 3 * 56 + (256 * 4 + 8 + STRING) + 2_048;
/// What the parse needs whatever the body (the deserializer, the outline, rounding).
const BASE: usize = 16 * 1024;

/// The peak bytes parsing `body` can take on top of the body itself, when parsing stops
/// past `limits`. An upper bound: real parses take less, usually far less.
pub fn parse_bytes(body: &[u8], limits: &Limits) -> usize {
    let scan = Scan::of(body);
    // The parse stops once the rows exceed the limit, after the item that did it.
    let rows = scan
        .values
        .min(limits.max_rows.saturating_add(scan.largest_item_values));
    // Sensor ids may join a base name and a name (SenML): twice the longest string, at
    // most 256 characters of 4 bytes; metrics 128, units 64 characters.
    let longest = scan.longest_string;
    let row = ROW + (2 * longest).min(1_024) + longest.min(512) + longest.min(256);
    let explanations = scan.values.min(MAX_EXPLANATIONS) * EXPLANATION;
    BASE + scan.largest_item
        // serde_json's scratch buffer for strings with escapes.
        + longest
        // A reason being formatted before it is cut short may quote a string in full.
        + 2 * longest
        + rows.saturating_mul(row)
        + explanations
}

/// What one pass over the bytes finds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scan {
    /// JSON values in the body (every row and every explanation stems from one).
    values: usize,
    /// The largest bound of one item's `Value`.
    largest_item: usize,
    /// The values in the item with the most.
    largest_item_values: usize,
    /// Bytes between the quotes of the longest string (key or value).
    longest_string: usize,
}

/// An open array or object while scanning.
struct Open {
    array: bool,
    /// Its elements are the items (the body's array, or an array member of the body's
    /// object).
    holds_items: bool,
    /// It has a member or element already.
    filled: bool,
}

impl Scan {
    fn of(body: &[u8]) -> Scan {
        let mut scan = Scan::default();
        let mut stack: Vec<Open> = Vec::new();
        // The item being measured, if any: its bound and values so far.
        let mut item: Option<(usize, usize)> = None;
        // Depth of the container the current item is an element of.
        let mut item_depth = 0;
        // Inside an object, the next string is a key.
        let mut expect_key = false;
        let mut at = 0;
        while let Some(&byte) = body.get(at) {
            at += 1;
            match byte {
                b'"' => {
                    let (length, end) = string_end(body, at);
                    at = end;
                    scan.longest_string = scan.longest_string.max(length);
                    let cost = length + STRING;
                    if expect_key {
                        expect_key = false;
                        if let Some((bound, _)) = item.as_mut() {
                            *bound += cost + MEMBER;
                        }
                    } else {
                        scan.value(&mut stack, &mut item, &mut item_depth, cost, false);
                    }
                }
                b'{' | b'[' => {
                    let array = byte == b'[';
                    scan.value(
                        &mut stack,
                        &mut item,
                        &mut item_depth,
                        if array { ARRAY } else { 0 },
                        true,
                    );
                    // The body's array holds the items; so does an array member of the
                    // body's object.
                    let holds_items =
                        array && (stack.is_empty() || (stack.len() == 1 && !stack[0].array));
                    stack.push(Open {
                        array,
                        holds_items,
                        filled: false,
                    });
                    expect_key = !array;
                }
                b'}' | b']' => {
                    stack.pop();
                    if item.is_some() && stack.len() == item_depth {
                        scan.close_item(&mut item);
                    }
                    expect_key = false;
                }
                b',' => {
                    expect_key = stack.last().is_some_and(|open| !open.array);
                }
                b':' | b' ' | b'\t' | b'\n' | b'\r' => {}
                _ => {
                    // A number, true, false or null: one value, no heap.
                    while body.get(at).is_some_and(|next| {
                        !matches!(
                            next,
                            b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r' | b':'
                        )
                    }) {
                        at += 1;
                    }
                    scan.value(&mut stack, &mut item, &mut item_depth, 0, false);
                }
            }
        }
        if item.is_some() {
            scan.close_item(&mut item);
        }
        scan
    }

    /// A value starts: a scalar costing `cost`, or (`opens`) an array or object.
    fn value(
        &mut self,
        stack: &mut [Open],
        item: &mut Option<(usize, usize)>,
        item_depth: &mut usize,
        cost: usize,
        opens: bool,
    ) {
        self.values += 1;
        let depth = stack.len();
        let (in_array, parent_holds_items, parent_was_filled) = match stack.last_mut() {
            Some(open) => {
                let filled = open.filled;
                open.filled = true;
                (open.array, open.holds_items, filled)
            }
            None => (false, false, false),
        };
        if parent_holds_items && item.is_none() {
            // A new item: an element of the array that holds them.
            *item = Some((0, 0));
            *item_depth = depth;
        }
        let Some((bound, values)) = item.as_mut() else {
            return;
        };
        *values += 1;
        *bound += cost;
        if depth > *item_depth {
            if in_array {
                *bound += ARRAY_ELEMENT;
            } else if !parent_was_filled {
                // The first member of an object allocates its first node.
                *bound += OBJECT;
            }
        }
        // A scalar item ends where it starts; a container item when it closes.
        if depth == *item_depth && !opens {
            self.close_item(item);
        }
    }

    fn close_item(&mut self, item: &mut Option<(usize, usize)>) {
        if let Some((bound, values)) = item.take() {
            self.largest_item = self.largest_item.max(bound);
            self.largest_item_values = self.largest_item_values.max(values);
        }
    }
}

/// The string that starts at `start` (just past its opening quote): its length as the
/// scan counts it (every byte up to the closing quote, an escape two) and where the scan
/// goes on (past the closing quote, or the body's end). Finds the quotes and backslashes
/// with `memchr`, not byte by byte: strings are most of a body's bytes.
fn string_end(body: &[u8], start: usize) -> (usize, usize) {
    let mut at = start;
    let mut length = 0;
    while let Some(found) = memchr::memchr2(b'"', b'\\', &body[at..]) {
        length += found;
        at += found;
        if body[at] == b'"' {
            return (length, at + 1);
        }
        // An escape: the backslash and the byte after it, whatever it is (an escaped
        // quote does not end the string).
        length += 2;
        at += 2;
        if at >= body.len() {
            return (length, body.len());
        }
    }
    (length + body.len() - at, body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition `string_end` must agree with: byte by byte, an escape two.
    fn byte_by_byte(body: &[u8], start: usize) -> (usize, usize) {
        let (mut at, mut length) = (start, 0);
        while at < body.len() {
            match body[at] {
                b'"' => return (length, at + 1),
                b'\\' => {
                    length += 2;
                    at += 2;
                }
                _ => {
                    length += 1;
                    at += 1;
                }
            }
        }
        (length, body.len())
    }

    #[test]
    fn a_string_ends_at_its_first_unescaped_quote_or_at_the_body_end() {
        for text in [
            "\"plain\", 1",
            "\"\"",
            "\"esc\\\"aped\\\\\" ]",
            "\"\\u00e8 and more\"",
            "\"unterminated",
            "\"ends in a backslash\\",
            "\"ends in an escape\\n",
            "\"\\\\\"",
        ] {
            let body = text.as_bytes();
            assert_eq!(string_end(body, 1), byte_by_byte(body, 1), "{text}");
        }
        assert_eq!(string_end(b"\"ab\"", 1), (2, 4));
        assert_eq!(string_end(b"\"a\\\"b\"x", 1), (4, 6));
    }
}
