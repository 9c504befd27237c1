package predict

import (
	"errors"
	"fmt"
	"strconv"
)

// maxFlatDepth bounds the nesting of KServe data, which may be flat or
// nested as its shape.
const maxFlatDepth = 8

// numbers reads nested JSON arrays of numbers straight into float32s,
// never building a tree of values: a JSON number decoded as any costs
// tens of bytes, and a request of many images cost gigabytes that way.
// It holds at most max values. The bytes are valid JSON (they come out of
// json.Unmarshal).
type numbers struct {
	b   []byte
	i   int
	out []float32
	max int
}

func (s *numbers) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek is the next byte that is not white space (0 at the end).
func (s *numbers) peek() byte {
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// kind names the JSON value that starts with c.
func kind(c byte) string {
	switch c {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '[':
		return "a list"
	}
	return "a number"
}

// number reads one number.
func (s *numbers) number() error {
	c := s.peek()
	if c != '-' && (c < '0' || c > '9') {
		return fmt.Errorf("a value is %s, not a number", kind(c))
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			s.i++
			continue
		}
		break
	}
	tok := s.b[start:s.i]
	f, err := strconv.ParseFloat(string(tok), 32)
	if err != nil {
		return fmt.Errorf("%q is not a float32", tok)
	}
	if len(s.out) >= s.max {
		return fmt.Errorf("more than %d values", s.max)
	}
	s.out = append(s.out, float32(f))
	return nil
}

// flat reads numbers nested to any depth up to maxFlatDepth.
func (s *numbers) flat(depth int) error {
	if s.peek() != '[' {
		return s.number()
	}
	if depth >= maxFlatDepth {
		return fmt.Errorf("nested deeper than %d lists", maxFlatDepth)
	}
	s.i++
	if s.peek() == ']' {
		s.i++
		return nil
	}
	for {
		if err := s.flat(depth + 1); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return nil
		default:
			return errors.New("a list is not closed")
		}
	}
}

// shaped reads nested lists of exactly the sizes dims, numbers inside.
// Each list's length is checked before its elements.
func (s *numbers) shaped(dims []int64) error {
	c := s.peek()
	if len(dims) == 0 {
		if c == '[' {
			return errors.New("nested deeper than the image")
		}
		return s.number()
	}
	if c != '[' {
		return fmt.Errorf("%s where a list of %d belongs", kind(c), dims[0])
	}
	start := s.i
	n, err := s.count()
	if err != nil {
		return err
	}
	if int64(n) != dims[0] {
		return fmt.Errorf("a list of %d where a list of %d belongs", n, dims[0])
	}
	end := s.i
	s.i = start + 1
	for k := 0; k < n; k++ {
		if k > 0 {
			s.peek()
			s.i++ // the comma
		}
		if err := s.shaped(dims[1:]); err != nil {
			return err
		}
	}
	s.i = end
	return nil
}

// count counts the elements of the list at s.i and leaves s.i after it,
// without decoding them.
func (s *numbers) count() (int, error) {
	s.i++ // '['
	if s.peek() == ']' {
		s.i++
		return 0, nil
	}
	for n := 1; ; n++ {
		if err := s.skip(); err != nil {
			return 0, err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return n, nil
		default:
			return 0, errors.New("a list is not closed")
		}
	}
}

// skip passes over one JSON value.
func (s *numbers) skip() error {
	switch s.peek() {
	case '"':
		return s.str()
	case '[', '{':
		depth := 0
		for ; s.i < len(s.b); s.i++ {
			switch s.b[s.i] {
			case '"':
				if err := s.str(); err != nil {
					return err
				}
				s.i--
			case '[', '{':
				depth++
			case ']', '}':
				if depth--; depth == 0 {
					s.i++
					return nil
				}
			}
		}
		return errors.New("a list is not closed")
	case 0:
		return errors.New("the data ends early")
	}
	for s.i < len(s.b) { // a number or a literal
		switch s.b[s.i] {
		case ',', ']', '}', ' ', '\t', '\n', '\r':
			return nil
		}
		s.i++
	}
	return nil
}

// str skips one JSON string.
func (s *numbers) str() error {
	if s.peek() != '"' {
		return errors.New("not a string")
	}
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			s.i++
		case '"':
			s.i++
			return nil
		}
	}
	return errors.New("a string is not closed")
}

// images reads a TensorFlow Serving list of images, each nested lists of
// exactly the sizes dims or an object of one named input holding them,
// and returns how many there were (at most maxImages).
func (s *numbers) images(dims []int64, maxImages int) (int, error) {
	if c := s.peek(); c != '[' {
		return 0, fmt.Errorf("%s, not a list of images", kind(c))
	}
	s.i++
	if s.peek() == ']' {
		s.i++
		return 0, nil
	}
	for n := 0; ; n++ {
		if n == maxImages {
			return n, fmt.Errorf("more than %d images in one request", maxImages)
		}
		named := s.peek() == '{'
		if named {
			s.i++
			if err := s.str(); err != nil {
				return n, fmt.Errorf("instance %d: %v", n, err)
			}
			if s.peek() != ':' {
				return n, fmt.Errorf("instance %d: not an object", n)
			}
			s.i++
		}
		if err := s.shaped(dims); err != nil {
			return n, fmt.Errorf("image %d: %v", n, err)
		}
		if named {
			if s.peek() != '}' {
				return n, fmt.Errorf("instance %d has more than one named input; the model takes one", n)
			}
			s.i++
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			return n + 1, nil
		default:
			return n, errors.New("the list of images is not closed")
		}
	}
}
