# Throughput against concurrency, both directions (OpenPGP, 10 KB), from
# test/bench/sidebyside.sh's results.tsv, with the peers' throughput (gpg,
# one process per message) as horizontal lines.
#   gnuplot -e "tsv='results.tsv'; png='throughput.png'" throughput.gp
set terminal pngcairo size 900,560 font "sans,11" noenhanced
set output png
set datafile separator "\t"
set title "cryptmilter through the milter protocol vs gpg per message (OpenPGP, 10 KB)"
set xlabel "concurrent milter sessions"
set ylabel "messages per second"
set logscale x 2
set xrange [0.8:160]
set yrange [0:*]
set grid
set key below
gpg_out = system("awk -F'\t' '$1==\"gpg\" && $2==\"out\" {print $7}' " . tsv)
gpg_in = system("awk -F'\t' '$1==\"gpg\" && $2==\"in\" {print $7}' " . tsv)
sel(dir) = sprintf("< awk -F'\t' '$1==\"cryptmilter\" && $2==\"%s\" && $3==\"openpgp\"' '%s'", dir, tsv)
plot sel("out") using 4:7 with linespoints lw 2 pt 7 title "cryptmilter outbound (sign+encrypt)", \
     sel("in") using 4:7 with linespoints lw 2 pt 5 title "cryptmilter inbound (decrypt+verify)", \
     gpg_out + 0 with lines dt 2 lw 2 title "gpg --sign --encrypt, 2 workers", \
     gpg_in + 0 with lines dt 3 lw 2 title "gpg --decrypt, 2 workers"
