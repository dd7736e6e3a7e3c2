# fish completion for kes
@HEADER@
#
# Completes commands, flags, flag values and, when a server variable (KES_SERVER,
# MINIO_KES_SERVER, MINIO_KMS_KES_ENDPOINT) is set, key names: those are asked of the
# server by 'kes completion __complete-keys', which gives up after one second and
# prints nothing on failure.

# Reads the tokens before the cursor: prints the command path they name, how many
# arguments follow it, and -k when -k/--insecure was given, one line each and each
# behind a letter, so that no line is empty.
function __kes_scan
    set -l tokens (commandline -opc)
    set -l path ''
    set -l nargs 0
    set -l insecure ''
    set -l skip 0
    set -l ended 0
    for word in $tokens[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        if test $ended = 1
            set nargs (math $nargs + 1)
            continue
        end
        switch $word
            case --
                set ended 1
            case -k --insecure
                set insecure -k
            case '--*=*'
            case '-*'
                set -l value (__kes_value "$path" $word)
                if test -n "$value"
                    set skip 1
                end
            case '*'
                if test $nargs = 0
                    set -l next (__kes_command "$path" $word)
                    if test -n "$next"
                        set path (string trim -- "$path $next")
                        continue
                    end
                end
                set nargs (math $nargs + 1)
        end
    end
    printf '%s\n' "p $path" "n $nargs" "k $insecure"
end

# __kes_scan of the current command line, computed once per line.
function __kes_state
    set -l line (commandline -pc)
    if test "$line" != "$__kes_state_line"
        set -g __kes_state_line $line
        set -g __kes_state_value (__kes_scan)
    end
    printf '%s\n' $__kes_state_value
end

# The command line names the command path $argv[1] and no argument yet.
function __kes_at
    set -l state (__kes_state)
    test "$state[1]" = "p $argv[1]"; and test "$state[2]" = "n 0"
end

# The command line names the command path $argv[1].
function __kes_in
    set -l state (__kes_state)
    test "$state[1]" = "p $argv[1]"
end

# The first argument of the command path $argv[1] is being completed.
function __kes_arg
    __kes_at $argv[1]
end

# Key names that start with the current token, from the server; nothing without a
# server variable.
function __kes_keys
    set -q KES_SERVER; or set -q MINIO_KES_SERVER; or set -q MINIO_KMS_KES_ENDPOINT; or return 0
    set -l state (__kes_state)
    set -l flags
    test "$state[3]" = "k -k"; and set flags -k
    set -l kes (commandline -opc)[1]
    $kes completion __complete-keys $flags -- (commandline -ct) 2>/dev/null </dev/null
end

@DATA@
