package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"
)

// Exact decoding. encoding/json matches object keys to struct fields
// case-insensitively (with Unicode folding: "REVISION", "Reply_To" and
// "reviſion" all land in Revision) and lets the last of two equal keys win.
// A message that one implementation reads as {"revision":"main"} and
// another as something else is a way around every check made on the first
// reading, so every network message is decoded exactly: one pre-pass over
// the tokens checks each key against the exact JSON names of the target
// type (derived from its json tags, once per type) and refuses duplicates;
// then encoding/json decodes, now unable to match a key loosely.

// MaxResponseSize caps one answer (status, discovery answer, build
// response) that the response decoders accept. The largest legitimate
// answer is a builder's final response with each host's Nix output tail;
// 1 MiB is also NATS's default max_payload. protocol/gather applies the
// same cap before decoding.
const MaxResponseSize = 1 << 20

// maxQuoted bounds how much of a key or value an error message quotes.
const maxQuoted = 64

// shape is the exact set of JSON names of a struct type, and the shapes of
// the values that are themselves objects or arrays of objects. A nil
// *shape means the value is not looked into by the pre-pass; encoding/json
// checks its type.
type shape struct {
	fields map[string]*shape // object: exact JSON name → value shape
	elem   *shape            // array: shape of each element
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// shapeOf derives the shape of t from its json tags, following the rules
// of encoding/json: unexported fields and `json:"-"` are ignored, an
// untagged field is named by its Go name, untagged embedded structs are
// flattened. Types with their own UnmarshalJSON are not looked into.
func shapeOf(t reflect.Type) *shape {
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return shapeOf(t.Elem())
	case reflect.Slice, reflect.Array:
		if e := shapeOf(t.Elem()); e != nil {
			return &shape{elem: e}
		}
		return nil
	case reflect.Struct:
		s := &shape{fields: map[string]*shape{}}
		addFields(s, t)
		return s
	}
	return nil
}

func addFields(s *shape, t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				addFields(s, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		s.fields[name] = shapeOf(f.Type)
	}
}

// The shapes of the messages we decode, derived once.
var (
	deployRequestShape    = shapeOf(reflect.TypeFor[DeployRequest]())
	discoverRequestShape  = shapeOf(reflect.TypeFor[DiscoverRequest]())
	buildRequestShape     = shapeOf(reflect.TypeFor[BuildRequest]())
	deployResponseShape   = shapeOf(reflect.TypeFor[DeployResponse]())
	discoverResponseShape = shapeOf(reflect.TypeFor[DiscoverResponse]())
	buildResponseShape    = shapeOf(reflect.TypeFor[BuildResponse]())
)

// exactDecode decodes one JSON object of at most limit bytes into v, whose
// shape is sh. Every key must be one of the exact names of its object
// (unknown names are refused when strict, ignored otherwise, but a name
// that differs from a known one only in case is always refused), no key may
// appear twice in an object, nothing may follow the object, and every value
// must have its field's type. The error says which rule was broken.
func exactDecode(data []byte, limit int, sh *shape, strict bool, v any) error {
	if len(data) > limit {
		return fmt.Errorf("the message is %d bytes, more than the %d allowed", len(data), limit)
	}
	keysErr := checkKeys(data, sh, strict)
	if keysErr != nil && keysErr != errSyntax {
		return keysErr
	}
	// The pre-pass has refused unknown and duplicate keys, so a plain
	// Unmarshal (which also refuses trailing data) can only match exactly.
	// It is cheaper than a json.Decoder with DisallowUnknownFields, which
	// allocates a buffer per message (3 allocations, 750 bytes, some 30%
	// of a status's decode; BenchmarkDecodeDeployResponseExact).
	if err := json.Unmarshal(data, v); err != nil {
		return describeJSONError(err)
	}
	if keysErr != nil { // malformed, yet the decode took it: refuse anyway
		return keysErr
	}
	return nil
}

// describeJSONError rewords encoding/json's errors for a sender.
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Errorf("the message must be %s, not %s", jsonKind(te.Type), te.Value)
		}
		return fmt.Errorf("field %q must be %s, not %s", te.Field, jsonKind(te.Type), te.Value)
	}
	return err
}

// jsonKind names the JSON kind a Go type is decoded from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map, reflect.Pointer:
		return "an object"
	}
	return "a " + t.String()
}

// checkKeys is the pre-pass: a small scanner over data that checks the
// keys of every object whose shape is known, without allocating for keys
// that hold no escapes (about 0.4 µs for a status). It replaced a walk
// with json.Decoder.Token, which allocated for every token: 68
// allocations instead of 12 and about twice the time per deploy request
// (BenchmarkDecodeDeployRequest).
//
// For well-formed JSON it sees exactly the objects and keys encoding/json
// sees. Malformed JSON is refused either here or by the decode that
// follows; errSyntax hands the wording of the refusal to that decode.
func checkKeys(data []byte, sh *shape, strict bool) error {
	w := walker{data: data, strict: strict}
	w.space()
	if w.i < len(data) && data[w.i] != '{' {
		return errors.New("the message must be a JSON object")
	}
	if err := w.value(sh); err != nil {
		return err
	}
	w.space()
	if w.i != len(data) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// errSyntax means the pre-pass met malformed JSON; the decode that follows
// refuses it with encoding/json's description.
var errSyntax = errors.New("malformed JSON")

type walker struct {
	data   []byte
	i      int
	strict bool
	// path holds the keys leading to the current object, for errors.
	path  [4][]byte
	depth int
}

// name is the dotted name of key in the current object, as encoding/json
// names fields in its errors ("last_deploy.action").
func (w *walker) name(key string) string {
	var b strings.Builder
	for _, k := range w.path[:min(w.depth, len(w.path))] {
		b.Write(k)
		b.WriteByte('.')
	}
	b.WriteString(key)
	return bounded(b.String())
}

func (w *walker) space() {
	for w.i < len(w.data) {
		switch w.data[w.i] {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return
		}
	}
}

// value reads one value at w.i, looking into it when its shape is known.
func (w *walker) value(sh *shape) error {
	w.space()
	if w.i >= len(w.data) {
		return errSyntax
	}
	switch c := w.data[w.i]; {
	case c == '{' && sh != nil && sh.fields != nil:
		return w.object(sh)
	case c == '[' && sh != nil && sh.elem != nil:
		return w.array(sh.elem)
	case c == '{' || c == '[':
		return w.skipContainer()
	case c == '"':
		_, _, err := w.str()
		return err
	}
	// A number or a literal: the decode checks it.
	for w.i < len(w.data) {
		switch w.data[w.i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return nil
		}
		w.i++
	}
	return nil
}

// object reads an object of shape sh.
func (w *walker) object(sh *shape) error {
	w.i++ // '{'
	// Objects of a known shape have a few keys: a slice is cheaper than a
	// map. Answers may carry unknown keys, so a map takes over past a few
	// dozen (a linear scan over thousands of keys would be quadratic).
	var seenBuf [16][]byte
	seen := seenBuf[:0]
	var seenMap map[string]bool
	w.space()
	if w.i < len(w.data) && w.data[w.i] == '}' {
		w.i++
		return nil
	}
	for {
		w.space()
		if w.i >= len(w.data) || w.data[w.i] != '"' {
			return errSyntax
		}
		raw, escaped, err := w.str()
		if err != nil {
			return err
		}
		if escaped || !utf8.Valid(raw) {
			// As encoding/json reads it (invalid UTF-8 becomes U+FFFD).
			var key string
			if json.Unmarshal(w.data[w.i-len(raw)-2:w.i], &key) != nil {
				return errSyntax
			}
			raw = []byte(key)
		}
		// string(raw) in a map index or comparison does not allocate.
		sub, known := sh.fields[string(raw)]
		if !known {
			for k := range sh.fields {
				if strings.EqualFold(k, string(raw)) {
					return fmt.Errorf("unknown field %q: field names are case-sensitive, the field is %q", w.name(string(raw)), w.name(k))
				}
			}
			if w.strict {
				return fmt.Errorf("unknown field %q", w.name(string(raw)))
			}
		}
		dup := seenMap[string(raw)]
		if seenMap == nil {
			for _, k := range seen {
				dup = dup || bytes.Equal(k, raw)
			}
			seen = append(seen, raw)
			if len(seen) > 32 {
				seenMap = make(map[string]bool, 2*len(seen))
				for _, k := range seen {
					seenMap[string(k)] = true
				}
			}
		} else {
			seenMap[string(raw)] = true
		}
		if dup {
			return fmt.Errorf("field %q appears twice", w.name(string(raw)))
		}
		w.space()
		if w.i >= len(w.data) || w.data[w.i] != ':' {
			return errSyntax
		}
		w.i++
		if w.depth < len(w.path) {
			w.path[w.depth] = raw
		}
		w.depth++
		err = w.value(sub)
		w.depth--
		if err != nil {
			return err
		}
		w.space()
		if w.i >= len(w.data) {
			return errSyntax
		}
		switch w.data[w.i] {
		case ',':
			w.i++
		case '}':
			w.i++
			return nil
		default:
			return errSyntax
		}
	}
}

// array reads an array whose elements have shape elem.
func (w *walker) array(elem *shape) error {
	w.i++ // '['
	w.space()
	if w.i < len(w.data) && w.data[w.i] == ']' {
		w.i++
		return nil
	}
	for {
		if err := w.value(elem); err != nil {
			return err
		}
		w.space()
		if w.i >= len(w.data) {
			return errSyntax
		}
		switch w.data[w.i] {
		case ',':
			w.i++
		case ']':
			w.i++
			return nil
		default:
			return errSyntax
		}
	}
}

// str reads a string at w.i and returns its raw contents (between the
// quotes) and whether it holds escapes.
func (w *walker) str() (raw []byte, escaped bool, err error) {
	w.i++ // '"'
	start := w.i
	for w.i < len(w.data) {
		switch w.data[w.i] {
		case '"':
			w.i++
			return w.data[start : w.i-1], escaped, nil
		case '\\':
			escaped = true
			w.i++ // the escaped byte cannot end the string
		}
		w.i++
	}
	return nil, false, errSyntax
}

// skipContainer skips an object or array that is not looked into, without
// recursion.
func (w *walker) skipContainer() error {
	for depth := 0; w.i < len(w.data); {
		switch w.data[w.i] {
		case '"':
			if _, _, err := w.str(); err != nil {
				return err
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				w.i++
				return nil
			}
		}
		w.i++
	}
	return errSyntax
}

// salvageReply returns the reply subject (and id, when valid) of a request
// that failed to decode, so that the sender can be told why. It reads only
// a well-formed JSON object whose top level holds exactly one "reply_to"
// string (exact name) that is a valid subject under prefix; anything less
// and nobody is answered.
func salvageReply(data []byte, prefix string) (id, replyTo string) {
	if len(data) > MaxMessageSize || !json.Valid(data) {
		return "", ""
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "", ""
	}
	var ids, replies int
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", ""
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return "", ""
		}
		var s string
		switch tok {
		case "reply_to":
			replies++
			if json.Unmarshal(raw, &s) == nil {
				replyTo = s
			}
		case "id":
			ids++
			if json.Unmarshal(raw, &s) == nil {
				id = s
			}
		}
	}
	if replies != 1 || ValidateReplySubject(replyTo, prefix) != nil {
		return "", ""
	}
	if ids != 1 || ValidateRequestID(id) != nil {
		id = ""
	}
	return id, replyTo
}

// bounded cuts s for quoting in an error message.
func bounded(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	cut := maxQuoted
	for cut > 0 && s[cut]&0xc0 == 0x80 { // not inside a UTF-8 sequence
		cut--
	}
	return s[:cut] + "…"
}
