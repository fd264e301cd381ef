package main

import (
	"context"
	"encoding"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/cryptmilter/cryptmilter/internal/config"
)

// logEffective logs the effective configuration, every key under its TOML
// name. Text logs get one "effective configuration" line for the
// top-level keys and one per table ("outbound.policy=opportunistic
// outbound.prefer=openpgp …"), lists joined by commas ("[]" when empty),
// each [[outbound.rule]] numbered from 1; JSON logs get one line whose
// "effective" is the configuration as a nested object with real arrays.
func logEffective(log *slog.Logger, cfg *config.Config) {
	const msg = "effective configuration"
	ctx := context.Background()
	if cfg.Log.Format == config.LogJSON {
		log.LogAttrs(ctx, slog.LevelInfo, msg, slog.Attr{Key: "effective", Value: slog.GroupValue(effectiveConfig(cfg, true)...)})
		return
	}
	var top, tables []slog.Attr
	for _, a := range effectiveConfig(cfg, false) {
		if a.Value.Kind() == slog.KindGroup {
			tables = append(tables, a)
		} else {
			top = append(top, a)
		}
	}
	log.LogAttrs(ctx, slog.LevelInfo, msg, top...)
	for _, a := range tables {
		if len(a.Value.Group()) > 0 {
			log.LogAttrs(ctx, slog.LevelInfo, msg, a)
		}
	}
}

// effectiveConfig is the effective configuration as log attributes, one per
// key under its TOML name, in the order of contrib/cryptmilter.toml's
// tables (see logEffective for the forms). Unset values (an enum never
// set, such as a rule's min_trust that defaults to wkd) and
// inbound.on_decrypt_error (the old name; actions.on_decrypt_error holds
// the value in force) are left out.
func effectiveConfig(cfg *config.Config, asJSON bool) []slog.Attr {
	return structAttrs(reflect.ValueOf(cfg).Elem(), "", asJSON)
}

// structAttrs renders the TOML-tagged fields of a struct; prefix is the
// table path, for the keys left out.
func structAttrs(v reflect.Value, prefix string, asJSON bool) []slog.Attr {
	var out []slog.Attr
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		key := prefix + name
		if key == "inbound.on_decrypt_error" {
			continue
		}
		if a, ok := valueAttr(name, v.Field(i), key+".", asJSON); ok {
			out = append(out, a)
		}
	}
	return out
}

// valueAttr renders one value; ok is false when it is left out.
func valueAttr(name string, v reflect.Value, prefix string, asJSON bool) (slog.Attr, bool) {
	if s, ok, unset := scalar(v); unset {
		return slog.Attr{}, false
	} else if ok {
		return slog.Any(name, s), true
	}
	switch v.Kind() {
	case reflect.Struct:
		return slog.Attr{Key: name, Value: slog.GroupValue(structAttrs(v, prefix, asJSON)...)}, true
	case reflect.Map:
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, fmt.Sprint(k.Interface()))
		}
		sort.Strings(keys)
		var attrs []slog.Attr
		for _, k := range keys {
			if a, ok := valueAttr(k, v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())), prefix+k+".", asJSON); ok {
				attrs = append(attrs, a)
			}
		}
		return slog.Attr{Key: name, Value: slog.GroupValue(attrs...)}, true
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Struct {
			return tablesAttr(name, v, prefix, asJSON), true
		}
		items := make([]string, 0, v.Len())
		for i := range v.Len() {
			s, _, _ := scalar(v.Index(i))
			items = append(items, fmt.Sprint(s))
		}
		if asJSON {
			return slog.Any(name, items), true
		}
		if len(items) == 0 {
			return slog.String(name, "[]"), true
		}
		return slog.String(name, strings.Join(items, ",")), true
	}
	return slog.String(name, fmt.Sprint(v.Interface())), true
}

// tablesAttr renders an array of tables: numbered groups in text, an
// array of objects in JSON.
func tablesAttr(name string, v reflect.Value, prefix string, asJSON bool) slog.Attr {
	if !asJSON {
		var groups []slog.Attr
		for i := range v.Len() {
			n := strconv.Itoa(i + 1)
			groups = append(groups, slog.Attr{Key: n, Value: slog.GroupValue(structAttrs(v.Index(i), prefix+n+".", false)...)})
		}
		if len(groups) == 0 {
			return slog.String(name, "[]")
		}
		return slog.Attr{Key: name, Value: slog.GroupValue(groups...)}
	}
	tables := make([]map[string]any, 0, v.Len())
	for i := range v.Len() {
		m := map[string]any{}
		for _, a := range structAttrs(v.Index(i), prefix, true) {
			m[a.Key] = a.Value.Any()
		}
		tables = append(tables, m)
	}
	return slog.Any(name, tables)
}

// scalar returns a plain value (string, bool, number, or a text-marshaled
// type's text); unset is true for an enum that was never set.
func scalar(v reflect.Value) (val any, ok, unset bool) {
	if tm, isTM := v.Interface().(encoding.TextMarshaler); isTM {
		if vd, isEnum := v.Interface().(interface{ Valid() bool }); isEnum && !vd.Valid() {
			return nil, false, true
		}
		b, err := tm.MarshalText()
		if err != nil {
			return err.Error(), true, false
		}
		if len(b) == 0 && v.Kind() == reflect.Int {
			return nil, false, true // an unset protocol
		}
		return string(b), true, false
	}
	switch v.Kind() {
	case reflect.String:
		return v.String(), true, false
	case reflect.Bool:
		return v.Bool(), true, false
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int(), true, false
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v.Uint(), true, false
	case reflect.Float32, reflect.Float64:
		return v.Float(), true, false
	}
	return nil, false, false
}
