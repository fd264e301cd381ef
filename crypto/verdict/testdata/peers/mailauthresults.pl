#!/usr/bin/perl
# Reads Authentication-Results field values from standard input, each
# followed by "\n\0\n", and prints for each one JSON line with the
# authserv-id Mail::AuthenticationResults reads from it ({"id": ...}) or
# why it could not ({"error": ...}).
use strict;
use warnings;
use JSON::PP;
use Mail::AuthenticationResults::Parser;

my $json = JSON::PP->new->canonical;
local $/ = "\n\0\n";
while (my $value = <STDIN>) {
    chomp $value;
    my $r = eval { Mail::AuthenticationResults::Parser->new->parse($value) };
    if (!$r) {
        my $err = $@ || 'no result';
        $err =~ s/\s+\z//;
        print $json->encode({ error => "$err" }), "\n";
        next;
    }
    print $json->encode({ id => $r->value->value // '' }), "\n";
}
