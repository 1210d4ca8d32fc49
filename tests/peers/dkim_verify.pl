#!/usr/bin/perl
# Verify the DKIM signatures of a message with Mail::DKIM, an implementation independent of dkimpy.
# Usage: dkim_verify.pl KEYMAP < message
# KEYMAP lines are "NAME<TAB>TXT value" (e.g. "s1._domainkey.example.com<TAB>v=DKIM1; k=rsa; p=...");
# every DNS question Mail::DKIM asks is answered from it (a name not in it is NXDOMAIN), so no
# resolver is needed.  Output: one line per signature, "RESULT DOMAIN SELECTOR ALGORITHM DETAIL",
# then "overall RESULT".  The message may have LF or CRLF line ends.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS;

my %txt;
open(my $map, '<', $ARGV[0]) or die "cannot open $ARGV[0]: $!";
while (my $line = <$map>) {
    chomp $line;
    my ($name, $value) = split(/\t/, $line, 2);
    $txt{lc $name} = $value;
}
close($map);

{
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ($domain, $type) = @_;
        my $value = $txt{lc $domain};
        if (!defined $value || uc($type) ne 'TXT') {
            $@ = 'NXDOMAIN';
            return;
        }
        $@ = 'NOERROR';
        my $rr = Net::DNS::RR->new(name => $domain, type => 'TXT', ttl => 300,
                                   txtdata => [ unpack('(A255)*', $value) ]);
        return ($rr);
    };
}

my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
local $/;
my $message = <STDIN>;
$message =~ s/\r?\n/\r\n/g;
$dkim->PRINT($message);
$dkim->CLOSE();
foreach my $sig ($dkim->signatures) {
    my $detail = $sig->result_detail;
    printf "%s %s %s %s %s\n", $sig->result, $sig->domain, $sig->selector, $sig->algorithm, $detail;
}
printf "overall %s\n", $dkim->result;
