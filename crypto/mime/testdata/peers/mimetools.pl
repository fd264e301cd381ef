#!/usr/bin/perl
# Prints, for each message file named on the command line, one JSON line
# with the MIME structure MIME-tools (MIME::Parser, what Request Tracker
# uses) reads from it, with Request Tracker's parser settings
# (RT::EmailParser::_SetupMIMEParser: nested messages and uuencode
# extracted, bodies decoded, in memory).
#
# A node is {"type", "boundary" (multiparts), "parts" (containers) or
# "body" (leaves: SHA-256 of the decoded body, CRLF read as LF,
# trailing line breaks dropped)}; a file
# MIME-tools cannot parse gives {"error": "..."}.
use strict;
use warnings;
use MIME::Parser;
use JSON::PP;
use Digest::SHA qw(sha256_hex);

sub node {
    my ($ent) = @_;
    my %n = (type => lc($ent->effective_type // ''));
    my @parts = $ent->parts;
    if ($n{type} =~ m{^multipart/}) {
        my $b = $ent->head->multipart_boundary;
        $n{boundary} = $b if defined $b;
    }
    if (@parts) {
        $n{parts} = [map { node($_) } @parts];
    } elsif ($ent->bodyhandle) {
        my $data = $ent->bodyhandle->as_string // '';
        $data =~ s/\r\n/\n/g;
        $data =~ s/\n+\z//;
        $n{body} = sha256_hex($data);
    } else {
        $n{parts} = [];
    }
    return \%n;
}

my $json = JSON::PP->new->canonical->utf8;
for my $file (@ARGV) {
    my $parser = MIME::Parser->new;
    $parser->extract_nested_messages(1);
    $parser->extract_uuencode(1);
    $parser->output_to_core(1);
    $parser->tmp_to_core(1);
    $parser->use_inner_files(1);
    $parser->ignore_errors(1);
    my $ent = eval { $parser->parse_open($file) };
    if (!$ent) {
        my $err = $@ || 'no entity';
        $err =~ s/\s+\z//;
        print $json->encode({ error => "$err" }), "\n";
        next;
    }
    print $json->encode(node($ent)), "\n";
}
