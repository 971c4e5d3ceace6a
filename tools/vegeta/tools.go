//go:build tools

// Package tools pins vegeta, the constant-rate HTTP load generator `make bench` uses
// (built from the Go module proxy into .bin/vegeta; see the Makefile).
package tools

import _ "github.com/tsenart/vegeta/v12"
