package data

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// readNPY parses a .npy file (format versions 1 to 3) held in b. Only numeric
// arrays are supported, not arrays of Python objects.
func readNPY(b []byte) (*ndarray, error) {
	const magic = "\x93NUMPY"
	if len(b) < 10 || string(b[:6]) != magic {
		return nil, fmt.Errorf("npy: wrong magic (not a .npy array)")
	}
	major := b[6]
	var hlen, at int
	switch major {
	case 1:
		hlen, at = int(binary.LittleEndian.Uint16(b[8:10])), 10
	case 2, 3:
		if len(b) < 12 {
			return nil, fmt.Errorf("npy: truncated header")
		}
		h := binary.LittleEndian.Uint32(b[8:12])
		if uint64(h) > uint64(len(b)) {
			return nil, fmt.Errorf("npy: truncated: header of %d bytes, file has %d", h, len(b))
		}
		hlen, at = int(h), 12
	default:
		return nil, fmt.Errorf("npy: unsupported format version %d", major)
	}
	if len(b)-at < hlen {
		return nil, fmt.Errorf("npy: truncated: header of %d bytes, file has %d after the preamble", hlen, len(b)-at)
	}
	header := string(b[at : at+hlen])
	descr, err := npyField(header, "descr")
	if err != nil {
		return nil, err
	}
	fortran, err := npyField(header, "fortran_order")
	if err != nil {
		return nil, err
	}
	shapeText, err := npyField(header, "shape")
	if err != nil {
		return nil, err
	}
	dt, err := strconv.Unquote(strings.ReplaceAll(descr, "'", "\""))
	if err != nil || dt == "" {
		return nil, fmt.Errorf("npy: unsupported descr %s", descr)
	}
	if dt[0] == 'O' || strings.Contains(dt, "O") {
		return nil, fmt.Errorf("npy: arrays of Python objects are not supported")
	}
	order := byte('|')
	if c := dt[0]; c == '<' || c == '>' || c == '|' || c == '=' {
		order = c
	}
	a := &ndarray{dtype: &npDtype{str: dt, order: order}, fortran: fortran == "True", data: b[at+hlen:]}
	if fortran != "True" && fortran != "False" {
		return nil, fmt.Errorf("npy: bad fortran_order %s", fortran)
	}
	var shape pyTuple
	shapeText = strings.TrimSpace(shapeText)
	if !strings.HasPrefix(shapeText, "(") || !strings.HasSuffix(shapeText, ")") {
		return nil, fmt.Errorf("npy: bad shape %s", shapeText)
	}
	for _, f := range strings.Split(shapeText[1:len(shapeText)-1], ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSuffix(f, "L"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("npy: bad shape %s", shapeText)
		}
		shape = append(shape, v)
	}
	if err := a.setShape(shape); err != nil {
		return nil, fmt.Errorf("npy: %v", err)
	}
	return a, nil
}

// npyField returns the text of one value of a .npy header, a Python dict
// literal such as {'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }.
func npyField(header, key string) (string, error) {
	k := "'" + key + "'"
	i := strings.Index(header, k)
	if i < 0 {
		return "", fmt.Errorf("npy: header has no %s", k)
	}
	rest := strings.TrimLeft(header[i+len(k):], " ")
	if !strings.HasPrefix(rest, ":") {
		return "", fmt.Errorf("npy: malformed header near %s", k)
	}
	rest = strings.TrimLeft(rest[1:], " ")
	end := -1
	switch {
	case strings.HasPrefix(rest, "("):
		if j := strings.Index(rest, ")"); j >= 0 {
			end = j + 1
		}
	case strings.HasPrefix(rest, "'"):
		if j := strings.Index(rest[1:], "'"); j >= 0 {
			end = j + 2
		}
	default:
		end = strings.IndexAny(rest, ",}")
	}
	if end < 0 {
		return "", fmt.Errorf("npy: malformed header near %s", k)
	}
	return strings.TrimSpace(rest[:end]), nil
}

// readNPZ reads the arrays of a .npz archive (numpy.savez or
// numpy.savez_compressed) held in b, by name without the .npy suffix.
func readNPZ(b []byte) (map[string]*ndarray, error) {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, fmt.Errorf("npz: not a zip archive: %v", err)
	}
	out := map[string]*ndarray{}
	for _, f := range zr.File {
		name, ok := strings.CutSuffix(f.Name, ".npy")
		if !ok {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("npz: member %s: %v", f.Name, err)
		}
		// ReadAll grows with the data actually there, whatever size the
		// archive claims.
		raw, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("npz: member %s: %v", f.Name, err)
		}
		a, err := readNPY(raw)
		if err != nil {
			return nil, fmt.Errorf("npz: member %s: %v", f.Name, err)
		}
		out[name] = a
	}
	return out, nil
}
