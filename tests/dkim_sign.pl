#!/usr/bin/perl
# Sign a message on stdin with Perl's Mail::DKIM (an implementation independent of dkimpy) and print
# the DKIM-Signature field followed by the message, CRLF line ends.
# Usage: dkim_sign.pl KEYFILE DOMAIN SELECTOR [ALGORITHM [CANONICALIZATION]]
use strict;
use warnings;
use Mail::DKIM::Signer;
use Mail::DKIM::TextWrap;

my ($keyfile, $domain, $selector, $algorithm, $method) = @ARGV;
die "usage: dkim_sign.pl KEYFILE DOMAIN SELECTOR [ALGORITHM [CANON]]\n" unless defined $selector;
my $signer = Mail::DKIM::Signer->new(
    Algorithm => $algorithm // "rsa-sha256",
    Method    => $method // "relaxed",
    Domain    => $domain,
    Selector  => $selector,
    KeyFile   => $keyfile,
    Headers   => "from:to:subject:date:message-id",
);
local $/;
binmode STDIN;
binmode STDOUT;
my $message = <STDIN>;
$message =~ s/\r?\n/\r\n/g;
$signer->PRINT($message);
$signer->CLOSE;
print $signer->signature->as_string, "\r\n", $message;
